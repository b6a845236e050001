"""``run``, ``config check``, ``status``, ``monitor``, ``demo``: the daemon and its live state."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from edge_agent.cli.common import (
    add_config,
    add_json,
    age,
    ago,
    ask_daemon,
    config,
    output,
    plural,
    size,
)
from edge_agent.config import check_config
from edge_agent.errors import EX_CONFIG
from edge_agent.logs import setup as setup_logging


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the commands."""
    run = sub.add_parser("run", help="run the daemon (what systemd starts)")
    add_config(run)
    run.add_argument("--log-format", choices=["auto", "json", "console"], help="override [log]")
    run.set_defaults(func=cmd_run)

    cfg = sub.add_parser("config", help="configuration tools")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True, metavar="SUBCOMMAND")
    check = cfg_sub.add_parser(
        "check",
        help="validate a file with the daemon's own loader; every error at once",
        description="Validate FILE and report every error (exit 78) or ok (exit 0). The MQTT "
        "password source and TLS files are checked when present on this machine and noted "
        "when not; --strict requires them, as the service and `doctor` do.",
    )
    check.add_argument("file")
    check.add_argument(
        "--strict",
        action="store_true",
        help="also require the password source and TLS files (what the service needs)",
    )
    add_json(check)
    check.set_defaults(func=cmd_config_check)

    status = sub.add_parser("status", help="ask the running daemon how devices, queue, broker are")
    add_config(status)
    add_json(status)
    status.set_defaults(func=cmd_status)

    mon = sub.add_parser("monitor", help="live full-screen view of the running daemon")
    add_config(mon)
    mon.add_argument("--once", action="store_true", help="render one frame and exit (scripts)")
    mon.set_defaults(func=cmd_monitor)

    demo = sub.add_parser("demo", help="run a demo line: simulated devices, broker, daemon")
    demo.add_argument("-c", "--config", default="config/demo.toml", help="demo config")
    demo.add_argument("--seconds", type=float, default=0, help="stop after N s (0: until ^C)")
    demo.add_argument("--rate", type=float, default=5.0, help="readings/s per device")
    demo.add_argument("--quiet", action="store_true", help="summary only, no line per reading")
    demo.set_defaults(func=cmd_demo)


def cmd_run(args: argparse.Namespace) -> int:
    """Run the daemon until SIGTERM."""
    cfg = config(args, secrets=True)
    setup_logging(cfg.log.level, args.log_format or cfg.log.format)
    from edge_agent.daemon import run  # noqa: PLC0415 - keeps the other commands light

    return run(cfg)


def cmd_config_check(args: argparse.Namespace) -> int:
    """Validate; print every error (exit 78) or ok with notes (exit 0)."""
    report = check_config(args.file, strict=args.strict)
    devices = sorted(report.config.devices) if report.config else []
    valid = not report.errors
    if args.json:
        result = {
            "file": args.file,
            "valid": valid,
            "strict": args.strict,
            "errors": report.errors,
            "notes": report.notes,
            "devices": devices,
        }
        print(json.dumps(result))
        return 0 if valid else EX_CONFIG
    for note in report.notes:
        print(f"note: {note}")
    if not valid:
        for line in report.errors:
            print(line, file=sys.stderr)
        n = len(report.errors)
        print(f"{args.file}: {n} error{'s' if n > 1 else ''}", file=sys.stderr)
        return EX_CONFIG
    print(f"{args.file}: ok ({len(devices)} devices: {', '.join(devices)})")
    return 0


def render_status(st: dict[str, Any]) -> str:
    """The human form of the daemon's status."""
    lines = [
        f"agent {st['agent']} ({st['site']}/{st['line']}) pid {st['pid']}, "
        f"up {age(st['uptime_s'])}",
        "",
        "devices:",
    ]
    devices = st["devices"]
    width = max((len(d) for d in devices), default=0)
    for dev_id, d in devices.items():
        lines += render_device(dev_id, d, width)
    q = st["queue"]
    lines += [
        "",
        f"queue: {q['pending']} pending, oldest unsent {age(q['oldest_pending_age_s'])}, "
        f"{size(q['bytes'])} of readings / {size(q['max_bytes'])} bound, "
        f"{size(q['disk_bytes'])} on disk; accepted {q['accepted']}, sent {q['sent']}, "
        f"dropped {q['dropped']}, rejected {q['rejected']} ({q['path']})",
        render_broker(st["broker"]),
    ]
    return "\n".join(lines)


def render_device(dev_id: str, d: dict[str, Any], width: int) -> list[str]:
    """Two lines for one device: its state (and why), then where it is and its figures."""
    why = f" ({d['reason']})" if d["reason"] else ""
    rejects = ", ".join(f"{k}={v}" for k, v in d["rejects"].items()) or "none"
    where = d.get("address") or d.get("port") or "-"
    last = ago(d["last_reading_age_s"])
    if d.get("last_value") is not None and d["last_reading_age_s"] is not None:
        last += f" ({d['last_value']})"
    return [
        f"  {dev_id:{width}}  {d['type']:20} {d['state']}{why}",
        f"  {'':{width}}  port {where}; last reading {last}; "
        f"{plural(d['readings'], 'reading')} ({d['readings_per_min']}/min); rejects {rejects} "
        f"({d['rejects_per_min']}/min); {plural(d['reconnects'], 'reconnect')}",
    ]


def render_broker(b: dict[str, Any]) -> str:
    """``broker: connected host:port ...`` or ``broker: DISCONNECTED (why); next try in 1.2 s``."""
    head = "connected" if b["connected"] else "DISCONNECTED"
    if not b["connected"]:
        why = b.get("reason") or b.get("last_error")
        head += f" ({why})" if why else ""
        retry = b.get("next_retry_in_s")
        head += "; trying now" if retry is None else f"; next try in {retry:.1f} s"
    return (
        f"broker: {head}; {b['host']}:{b['port']} MQTT {b['protocol']}"
        f"{' TLS' if b['tls'] else ''}; last PUBACK {ago(b['last_puback_age_s'])}; "
        f"{plural(b['acked_rows'], 'reading')} acked; {b['inflight_messages']} in flight; "
        f"{plural(b['reconnects'], 'reconnect')}; rejects {b['rejects'] or 'none'}"
    )


def cmd_status(args: argparse.Namespace) -> int:
    """Print the daemon's status."""
    st = ask_daemon(config(args), {"cmd": "status"})["status"]
    output(args, st, render_status)
    return 0


def cmd_monitor(args: argparse.Namespace) -> int:
    """The live TUI."""
    from edge_agent.monitor import run_monitor  # noqa: PLC0415 - rich is only needed here

    cfg = config(args)
    ask_daemon(cfg, {"cmd": "ping"})  # no daemon: one line and exit 1, not an empty screen
    return run_monitor(cfg, once=args.once)


def cmd_demo(args: argparse.Namespace) -> int:
    """The demo line."""
    from edge_agent.demo import run_demo  # noqa: PLC0415 - pulls in the simulators

    return run_demo(Path(args.config), args.seconds, args.rate, args.quiet)
