"""The one command-line entry point: ``edge-agent <command>``.

Exit codes: 0 ok, 1 failure, 2 usage, 73 another daemon holds the queue or control socket
(EX_LOCKED), 78 configuration error (EX_CONFIG). Every command has
``--help``; those that report take ``--json``. Commands that need the daemon's settings take
``-c/--config`` (default ``$EDGE_AGENT_CONFIG`` or /etc/edge-agent/edge-agent.toml).
"""

from __future__ import annotations

import argparse
import os
import sys

from edge_agent import __version__
from edge_agent.cli import broker_cmds, daemon_cmds, device_cmds, doctor, hub_cmds, queue_cmds
from edge_agent.cli.common import CommandError, UsageError
from edge_agent.errors import EX_CONFIG, ConfigError, EdgeAgentError
from edge_agent.instance import EX_LOCKED, AlreadyRunningError
from edge_agent.logs import setup as setup_logging

MODULES = (daemon_cmds, queue_cmds, broker_cmds, device_cmds, doctor, hub_cmds)


def build_parser() -> argparse.ArgumentParser:
    """The full parser; each command module adds its subcommands."""
    p = argparse.ArgumentParser(prog="edge-agent", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in MODULES:
        module.add_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the command; returns the exit code."""
    args = build_parser().parse_args(argv)
    setup_logging("warning", "console")  # library/driver logs go to stderr; `run` reconfigures
    try:
        code: int = args.func(args)
        sys.stdout.flush()  # a reader that went away is found here, not at interpreter exit
    except ConfigError as err:
        text = str(err)
        sep = "\n" if "\n" in text else " "  # one error: one line; several: one line each
        print(f"edge-agent: configuration error:{sep}{text}", file=sys.stderr)
        return EX_CONFIG
    except UsageError as err:
        print(f"edge-agent: {err}", file=sys.stderr)
        return 2
    except AlreadyRunningError as err:
        print(f"edge-agent: {err}", file=sys.stderr)
        return EX_LOCKED
    except CommandError as err:
        print(f"edge-agent: {err}", file=sys.stderr)
        return 1
    except EdgeAgentError as err:
        print(f"edge-agent: {err}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # `edge-agent queue stats | head -3`: the reader has what it wanted. Point stdout at
        # /dev/null so the interpreter's final flush does not raise again, and exit quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        return 130
    return code
