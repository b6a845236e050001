"""``probe``: read one device live, from the configuration or from ``--opt`` settings (through
the running daemon when it owns the device)."""

from __future__ import annotations

import argparse
import json
import signal
import time
from pathlib import Path
from typing import Any

from drivers import config_class, driver_class
from edge_agent.cli.common import CommandError, config, err
from edge_agent.config import AgentConfig, DeviceConfig, validate_device
from edge_agent.errors import ConfigError, DeviceError
from edge_agent.reading import Decoded

PROBE_SOURCE = Path("probe --opt")


def _probe_driver(args: argparse.Namespace, cfg: AgentConfig | None) -> Any:
    if args.type:
        return driver_class(args.type)("probe", _probe_config(args))
    if cfg is None or args.device not in cfg.devices:
        valid = ", ".join(sorted(cfg.devices)) if cfg else ""
        msg = f"give a configured device id ({valid or 'none configured'}) or --type and --port"
        if args.device and cfg is not None:
            msg = (
                f"no device {args.device!r} in {cfg.source} (configured: {valid or 'none'}); "
                "or probe a port directly with --type and --port"
            )
        raise CommandError(msg)
    dev = cfg.devices[args.device]
    return driver_class(dev.type)(args.device, dev)


def _probe_config(args: argparse.Namespace) -> DeviceConfig:
    """``--type``, ``--port`` and every ``--opt`` as a device table, validated like the file.

    ``--port`` is needed only when the driver requires a port (not for Modbus TCP).
    """
    port_field = config_class(args.type).model_fields.get("port")
    if not args.port and port_field is not None and port_field.is_required():
        msg = f"--type {args.type} needs --port (a pyserial URL or device path)"
        raise CommandError(msg)
    table: dict[str, Any] = {"type": args.type}
    if args.port:
        table["port"] = args.port
    for opt in args.opt:
        key, eq, value = opt.partition("=")
        if not eq or not key:
            msg = f"{PROBE_SOURCE}: {opt!r}: expected KEY=VALUE (JSON values), e.g. baudrate=9600"
            raise ConfigError(msg)
        try:
            table[key] = json.loads(value)
        except ValueError:
            table[key] = value
    return validate_device("probe", table, PROBE_SOURCE)


def _show(args: argparse.Namespace, d: Decoded, trace: Any) -> None:
    item = {
        "t": time.strftime("%H:%M:%S"),
        "kind": d.kind.value,
        "value": d.value,
        "symbology": d.symbology,
        "stable": d.stable,
        "gate": d.gate,
        "raw": d.raw.hex(" "),
    }
    if trace:
        trace.write(f"{time.time():.6f} frame {d.raw.hex(' ')}\n")
    if args.json:
        print(json.dumps(item), flush=True)
    else:
        extra = "".join(
            f" {k}={item[k]}" for k in ("symbology", "stable", "gate") if item[k] is not None
        )
        print(
            f"{item['t']} {item['kind']:8} {item['value']!s}{extra}\n         raw {item['raw']}",
            flush=True,
        )


def cmd_probe(args: argparse.Namespace) -> int:
    """Read one device live; refuse to steal a port the daemon holds."""
    cfg = None if args.type else config(args)
    if args.via_daemon:
        if cfg is None:
            raise CommandError("--via-daemon needs a configured device id")
        return _probe_via_daemon(args, cfg)
    driver = _probe_driver(args, cfg)
    trace = args.trace.open("a", encoding="utf-8") if args.trace else None

    def on_reject(_dev: str, reason: str, frame: bytes) -> None:
        if trace:
            trace.write(f"{time.time():.6f} reject {reason} {frame.hex(' ')}\n")
        err(f"REJECT {reason}: {frame.hex(' ')}  (rejects so far: {dict(driver.rejects)})")

    driver.on_reject = on_reject
    try:
        driver.open()
    except DeviceError as e:
        busy = any(w in str(e).lower() for w in ("lock", "busy", "resource temporarily"))
        hint = (
            (
                " — the running daemon holds this port; use `edge-agent probe --via-daemon "
                f"{args.device or ''}` or `edge-agent monitor`"
            )
            if busy
            else ""
        )
        msg = f"cannot open {getattr(driver.cfg, 'port', '')}: {e}{hint}"
        raise CommandError(msg) from e
    return _probe_loop(args, driver, trace)


def _probe_loop(args: argparse.Namespace, driver: Any, trace: Any) -> int:
    deadline = time.monotonic() + args.seconds if args.seconds else None
    readings = 0
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
    try:
        while (deadline is None or time.monotonic() < deadline) and (
            not args.count or readings < args.count
        ):
            d = driver.read(0.2)
            if d is not None:
                readings += 1
                _show(args, d, trace)
    except KeyboardInterrupt:
        pass
    except DeviceError as e:
        msg = f"device lost: {e}"
        raise CommandError(msg) from e
    finally:
        driver.close()
        if trace:
            trace.close()
    summary = {"readings": readings, "frames": driver.frames, "rejects": dict(driver.rejects)}
    err(f"probe: {summary}")
    return 0


def _probe_via_daemon(args: argparse.Namespace, cfg: AgentConfig) -> int:
    import socket  # noqa: PLC0415

    path = cfg.control.path()
    deadline = time.monotonic() + args.seconds if args.seconds else None
    n = 0
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(path))
            s.sendall(json.dumps({"cmd": "watch", "device": args.device}).encode() + b"\n")
            f = s.makefile("rb")
            for line in f:
                ev = json.loads(line)
                if ev.get("event") in ("reading", "reject"):
                    n += ev["event"] == "reading"
                    print(json.dumps(ev) if args.json else _watch_line(ev), flush=True)
                if (deadline and time.monotonic() > deadline) or (args.count and n >= args.count):
                    break
    except OSError as e:
        msg = f"no daemon answers on {path}: {e}"
        raise CommandError(msg) from e
    except KeyboardInterrupt:
        pass
    return 0


def _watch_line(ev: dict[str, Any]) -> str:
    if ev["event"] == "reject":
        return f"REJECT {ev['device']} {ev['reason']}: {ev['raw']}"
    head = f"{ev['ts'][11:23]} {ev['device']} seq={ev['seq']}"
    return f"{head} {ev['kind']} {ev['value']} raw {ev['raw']}"
