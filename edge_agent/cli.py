"""The one command-line entry point: ``edge-agent <command>``.

Exit codes: 0 ok, 1 failure, 2 usage, 78 configuration error (EX_CONFIG).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edge_agent import __version__
from edge_agent.config import load_config
from edge_agent.errors import EX_CONFIG, ConfigError, EdgeAgentError
from edge_agent.logs import setup as setup_logging

DEFAULT_CONFIG = "/etc/edge-agent/edge-agent.toml"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edge-agent", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("-c", "--config", default=DEFAULT_CONFIG, help="TOML file (%(default)s)")
    run.add_argument("--log-format", choices=["auto", "json", "console"], help="override [log]")

    cfg = sub.add_parser("config", help="configuration tools")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True, metavar="SUBCOMMAND")
    check = cfg_sub.add_parser("check", help="validate a file with the daemon's own loader")
    check.add_argument("file")
    check.add_argument("--json", action="store_true", help="machine-readable result")

    demo = sub.add_parser("demo", help="run a demo line: simulated scanners, broker, daemon")
    demo.add_argument("-c", "--config", default="config/demo.toml", help="demo config")
    demo.add_argument("--seconds", type=float, default=0, help="stop after N s (0: until ^C)")
    demo.add_argument("--rate", type=float, default=5.0, help="readings/s per scanner")
    demo.add_argument("--quiet", action="store_true", help="summary only, no line per reading")

    queue = sub.add_parser("queue", help="inspect the SQLite queue (safe while the daemon runs)")
    queue_sub = queue.add_subparsers(dest="queue_command", required=True, metavar="SUBCOMMAND")
    stats = queue_sub.add_parser("stats", help="depth, bytes, oldest unsent, counters")
    stats.add_argument("-c", "--config", default=DEFAULT_CONFIG)
    stats.add_argument("--json", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the command; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "config":
            return _config_check(args)
        if args.command == "demo":
            from edge_agent.demo import run_demo  # noqa: PLC0415 - pulls in simulators

            return run_demo(Path(args.config), args.seconds, args.rate, args.quiet)
        if args.command == "queue":
            return _queue_stats(args)
    except ConfigError as err:
        print(f"edge-agent: configuration error:\n{err}", file=sys.stderr)
        return EX_CONFIG
    except EdgeAgentError as err:
        print(f"edge-agent: {err}", file=sys.stderr)
        return 1
    return 2


def _run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    setup_logging(cfg.log.level, args.log_format or cfg.log.format)
    from edge_agent.daemon import run  # noqa: PLC0415 - keeps `config check` light

    return run(cfg)


def _config_check(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.file)
    except ConfigError as err:
        if args.json:
            print(json.dumps({"file": args.file, "valid": False, "error": str(err)}))
        else:
            print(f"{err}", file=sys.stderr)
        return EX_CONFIG
    if args.json:
        print(json.dumps({"file": args.file, "valid": True, "devices": sorted(cfg.devices)}))
    else:
        print(f"{args.file}: ok ({len(cfg.devices)} devices: {', '.join(sorted(cfg.devices))})")
    return 0


def _queue_stats(args: argparse.Namespace) -> int:
    import time  # noqa: PLC0415

    from edge_agent import queue  # noqa: PLC0415

    cfg = load_config(args.config)
    con = queue.open_reader(cfg.queue.path)
    try:
        s = queue.stats(con)
    finally:
        con.close()
    oldest = None if s.oldest_pending_ns is None else time.time() - s.oldest_pending_ns / 1e9
    out = {**s.__dict__, "oldest_pending_age_s": oldest, "path": str(cfg.queue.path)}
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:22} {v}")
    return 0
