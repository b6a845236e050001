"""Helpers shared by the CLI commands: config and socket options, output, the daemon client."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_agent import control
from edge_agent.config import AgentConfig, load_config

DEFAULT_CONFIG = "/etc/edge-agent/edge-agent.toml"


class CommandError(Exception):
    """A command failed (exit 1); the message says what and what to do."""


class UsageError(CommandError):
    """An argument cannot be used (exit 2, like argparse's own errors): one line, no usage."""


def add_config(p: argparse.ArgumentParser) -> None:
    """``-c/--config FILE``."""
    p.add_argument(
        "-c",
        "--config",
        default=os.environ.get("EDGE_AGENT_CONFIG", DEFAULT_CONFIG),
        help="daemon config (default: $EDGE_AGENT_CONFIG or %(default)s)",
    )


def add_json(p: argparse.ArgumentParser) -> None:
    """``--json``."""
    p.add_argument("--json", action="store_true", help="machine-readable output")


def config(args: argparse.Namespace, *, secrets: bool = False) -> AgentConfig:
    """Load the config named by ``--config`` (ConfigError -> exit 78).

    Secrets are read only by commands that talk to the broker (``secrets=True``).
    """
    return load_config(args.config, secrets=secrets)


def output(args: argparse.Namespace, obj: Any, human: Callable[[Any], str]) -> None:
    """Print ``obj`` as JSON with ``--json``, else ``human(obj)``."""
    if getattr(args, "json", False):
        print(json.dumps(obj, default=str))
    else:
        print(human(obj))


def ask_daemon(cfg: AgentConfig, req: dict[str, Any]) -> dict[str, Any]:
    """Send one request to the running daemon's control socket. Raises CommandError if none."""
    path = cfg.control.path()
    try:
        reply = control.request(path, req)
    except (OSError, ValueError) as err:
        msg = f"no daemon answers on {path} ({err}); is it running? (systemctl status edge-agent)"
        raise CommandError(msg) from err
    if not reply.get("ok"):
        raise CommandError(str(reply.get("error")))
    return reply


def age(seconds: float | None) -> str:
    """``3.2 s`` / ``5 min`` / ``never``."""
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def ago(seconds: float | None) -> str:
    """``3.2 s ago`` / ``5 min ago`` / ``never`` (not "never ago")."""
    return "never" if seconds is None else f"{age(seconds)} ago"


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 reading`` / ``2 readings`` / ``0 readings``."""
    return f"{n} {word if n == 1 else (many or word + 's')}"


def size(n: int) -> str:
    """Bytes for a person: ``512 B``, ``12.5 KiB``, ``3.2 MiB``, ``1.1 GiB``."""
    if n < 1024:
        return f"{n} B"
    value, unit = n / 1024, "KiB"
    for bigger in ("MiB", "GiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{value:.1f} {unit}"


def err(text: str) -> None:
    """A line on stderr."""
    print(text, file=sys.stderr)


def path_arg(value: str) -> Path:
    """argparse type for paths."""
    return Path(value)
