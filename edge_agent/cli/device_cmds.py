"""``ports``, ``probe``, ``simulate``: find devices, read one live, start a simulator."""

from __future__ import annotations

import argparse
import ast
import fcntl
import importlib
import json
import os
import re
import signal
import struct
import sys
import termios
import time
import tty
from dataclasses import asdict
from pathlib import Path
from typing import Any

from drivers import DRIVERS, config_class, driver_class
from edge_agent.cli.common import CommandError, add_config, add_json, config, err, output
from edge_agent.config import AgentConfig, DeviceConfig, validate_device
from edge_agent.errors import EX_CONFIG, ConfigError, DeviceError
from edge_agent.reading import Decoded

BY_ID = Path("/dev/serial/by-id")
#: A "(... §3.2)" pointer to the protocol notes in a simulator's docstring: not for the listing.
_REFERENCE = re.compile(r"\s*\([^)]*§[^)]*\)")


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the commands."""
    ports = sub.add_parser(
        "ports",
        help="serial ports and USB scanners, matched to the config (works without a config)",
    )
    add_config(ports)
    add_json(ports)
    ports.add_argument(
        "--listen",
        type=float,
        default=0.3,
        metavar="SECONDS",
        help="how long to listen on each onboard UART for a device (default %(default)s; "
        "scan a barcode meanwhile to find a scanner there)",
    )
    ports.set_defaults(func=cmd_ports)

    probe = sub.add_parser("probe", help="open one device and show its readings live")
    add_config(probe)
    add_json(probe)
    probe.add_argument("device", nargs="?", help="device id from the config")
    probe.add_argument("-t", "--type", choices=sorted(DRIVERS), help="driver, with --port")
    probe.add_argument(
        "-p", "--port", help="pyserial URL / device for --type (not for Modbus TCP: --opt host=)"
    )
    probe.add_argument(
        "--opt",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="driver setting for --type (repeatable; JSON values)",
    )
    probe.add_argument("--seconds", type=float, default=0, help="stop after N s (0: until ^C)")
    probe.add_argument("--count", type=int, default=0, help="stop after N readings")
    probe.add_argument("--trace", type=Path, help="write every frame and reject as hex here")
    probe.add_argument(
        "--via-daemon",
        action="store_true",
        help="watch the device through the running daemon instead of opening it",
    )
    probe.set_defaults(func=cmd_probe)

    sim = sub.add_parser(
        "simulate",
        help="start a device simulator (python -m simulators.NAME); no NAME: list them",
    )
    sim.add_argument("name", nargs="?", help="simulator name, e.g. serial_line_scanner")
    sim.add_argument("args", nargs=argparse.REMAINDER, help="its arguments (see NAME --help)")
    sim.set_defaults(func=cmd_simulate)


#: modem-status lines a connected, powered device asserts
_MODEM_LINES = {
    termios.TIOCM_CAR: "DCD",
    termios.TIOCM_DSR: "DSR",
    termios.TIOCM_CTS: "CTS",
    termios.TIOCM_RNG: "RI",
}
CONSOLES = Path("/sys/class/tty/console/active")


def _consoles() -> set[str]:
    """Device paths of the kernel's active consoles (``console=ttyS0`` on many line PCs)."""
    try:
        return {f"/dev/{name}" for name in CONSOLES.read_text().split()}
    except OSError:
        return set()


def uart_answers(device: str, listen_s: float) -> tuple[bool, str]:
    """Whether a device seems connected to the onboard UART ``device``, and what showed it.

    Never disturbs a port in use: the kernel console is not opened at all, and a port another
    process holds with flock (the daemon's drivers do) is reported busy, not read. Otherwise,
    non-blocking: the modem-status lines, then whatever arrives within ``listen_s`` (read in
    raw mode at the port's current speed, and dropped); the port's settings are restored.
    """
    if device in _consoles():
        return False, "the kernel console (not probed)"
    try:
        fd = os.open(device, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as e:
        return False, f"cannot open: {e.strerror}"
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True, "busy: another process (the daemon?) holds it"
        try:
            bits = struct.unpack("I", fcntl.ioctl(fd, termios.TIOCMGET, struct.pack("I", 0)))[0]
        except OSError:  # no modem lines (a pty, some drivers)
            bits = 0
        up = [name for bit, name in _MODEM_LINES.items() if bits & bit]
        if up:
            return True, f"modem lines {'+'.join(up)} up"
        return _listen(fd, listen_s)
    except OSError as e:  # EIO: no UART hardware behind this node
        return False, f"cannot use: {e.strerror}"
    finally:
        os.close(fd)


def _listen(fd: int, listen_s: float) -> tuple[bool, str]:
    saved = termios.tcgetattr(fd)
    try:
        # No line discipline (no echo back to the device, bytes as they come); TCSANOW keeps
        # what already arrived, which TCSAFLUSH would discard.
        tty.setraw(fd, termios.TCSANOW)
        deadline = time.monotonic() + listen_s
        while time.monotonic() < deadline:
            try:
                got = os.read(fd, 256)
            except BlockingIOError:
                got = b""
            if got:
                return True, f"{len(got)} bytes received"
            time.sleep(0.02)
        return False, f"nothing answered (no modem line up, no byte in {listen_s:g} s)"
    finally:
        termios.tcsetattr(fd, termios.TCSANOW, saved)


def _serial_ports(listen_s: float) -> list[dict[str, Any]]:
    """Every serial port; ``candidate``: worth configuring as a scanner or scale.

    USB ports (with a VID:PID) are candidates. An onboard UART (no VID:PID: /dev/ttyS*, most
    PCs have one or two whether or not anything is wired to them) is one only when something
    answers on it (see :func:`uart_answers`).
    """
    from serial.tools import list_ports  # noqa: PLC0415

    by_id: dict[str, str] = {}
    if BY_ID.is_dir():
        by_id = {os.path.realpath(p): str(p) for p in BY_ID.iterdir()}
    out = []
    for p in list_ports.comports():
        vid_pid = f"{p.vid:04x}:{p.pid:04x}" if p.vid is not None else None
        note = None
        candidate = True
        if vid_pid is None:
            candidate, why = uart_answers(p.device, listen_s)
            note = f"onboard UART, {why}"
        out.append(
            {
                "device": p.device,
                "description": p.description,
                "vid_pid": vid_pid,
                "serial_number": p.serial_number,
                "by_id": by_id.get(p.device),
                "candidate": candidate,
                "note": note,
            }
        )
    return out


def cmd_ports(args: argparse.Namespace) -> int:
    """List what is plugged in and, when there is a config, what it expects.

    Works without a config (finding the port comes before writing one): the ports are listed
    and ``config`` says why nothing was matched.
    """
    cfg: AgentConfig | None = None
    config_note: str | None = None
    config_error = False
    if not Path(args.config).exists():
        config_note = f"no config found at {args.config}: configured devices not checked"
    else:
        try:
            cfg = config(args)
        except ConfigError as e:
            config_note = f"config not usable: {e}"
            config_error = True
    serial_ports = _serial_ports(args.listen)
    silent = {p["device"] for p in serial_ports if not p["candidate"]}
    detected: list[dict[str, Any]] = []
    for kind in sorted(DRIVERS):
        try:
            found = [asdict(d) for d in driver_class(kind).detect()]
        except Exception as e:
            err(f"{kind}: detection failed: {e}")
            continue
        # a UART with nothing behind it is no scanner, whatever the driver's detect() says
        detected += [d for d in found if d["port"] not in silent]
    configured = []
    for dev_id, dev in cfg.devices.items() if cfg else ():
        port = getattr(dev, "port", None)
        # a path counts when it exists (ptys and udev symlinks too); URLs are not checked here
        present = port is None or not port.startswith("/") or Path(port).exists()
        configured.append({"device": dev_id, "type": dev.type, "port": port, "present": present})
    result = {
        "serial": serial_ports,
        "detected": detected,
        "configured": configured,
        "config": str(args.config) if cfg else None,
        "config_note": config_note,
    }
    output(args, result, _ports_human)
    if config_error:
        return EX_CONFIG
    return 0 if all(c["present"] for c in configured) else 1


def _ports_human(r: dict[str, Any]) -> str:
    usable = [p for p in r["serial"] if p["candidate"]]
    lines = ["serial ports:"] + (
        [
            f"  {p['device']:14} {p['vid_pid'] or '-':10} sn={p['serial_number'] or '-':12} "
            f"{p['description']}"
            + (f"\n  {'':14} {p['by_id']}" if p["by_id"] else "")
            + (f"\n  {'':14} {p['note']}" if p["note"] else "")
            for p in usable
        ]
        or ["  none"]
    )
    silent = [p for p in r["serial"] if not p["candidate"]]
    if silent:
        lines.append("onboard UARTs, not offered as scanners:")
        lines += [f"  {p['device']:14} {p['note']}" for p in silent]
    lines += ["detected devices:"] + (
        [f"  {d['kind']:20} {d['port']}  {d['description']}" for d in r["detected"]] or ["  none"]
    )
    if r["config_note"]:
        lines.append(r["config_note"])
        return "\n".join(lines)
    lines.append(f"configured devices ({r['config']}):")
    for c in r["configured"]:
        mark = "present" if c["present"] else "MISSING"
        lines.append(f"  {c['device']:14} {c['type']:20} {c['port']}  {mark}")
    return "\n".join(lines)


#: What ``probe --type`` errors name instead of a file (same format as ``config check``).
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


def simulators() -> dict[str, str]:
    """The runnable simulators: name -> the first line of its docstring (read, not imported)."""
    import simulators as pkg  # noqa: PLC0415 - only this command needs the package

    root = Path(pkg.__file__).parent
    out: dict[str, str] = {}
    for path in sorted(root.iterdir()):
        if path.name.startswith("_"):
            continue
        if path.is_dir() and (path / "__main__.py").is_file():
            source = path / "__init__.py"
        elif path.is_file() and path.suffix == ".py" and "\ndef main(" in path.read_text():
            source = path
        elif path.is_dir() and "\ndef main(" in (path / "__init__.py").read_text():
            source = path / "__init__.py"
        else:
            continue  # shared parts (pty_port, tunnel) and the broker, not device simulators
        doc = ast.get_docstring(ast.parse(source.read_text())) or ""
        first = doc.splitlines()[0] if doc else ""
        out[path.stem] = _REFERENCE.sub("", first).replace("``", "")
    return out


def cmd_simulate(args: argparse.Namespace) -> int:
    """Run ``simulators.<name>.main``; without a name, list the simulators."""
    found = simulators()
    if args.name is None:
        width = max(map(len, found))
        for name, what in found.items():
            print(f"{name:{width}}  {what}")
        print("\nedge-agent simulate NAME --help: its options")
        return 0
    if args.name not in found:
        msg = f"no simulator {args.name!r}; edge-agent simulate lists them"
        raise CommandError(msg)
    module = importlib.import_module(f"simulators.{args.name}")
    if not hasattr(module, "main"):
        module = importlib.import_module(f"simulators.{args.name}.__main__")
    code: int = module.main(args.args)
    sys.stdout.flush()
    return code
