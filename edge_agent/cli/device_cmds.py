"""``ports``, ``probe``, ``simulate``: find devices, read one live (:mod:`.probe_cmd`), start a
simulator (:mod:`.simulate_cmd`)."""

from __future__ import annotations

import argparse
import fcntl
import os
import struct
import termios
import time
import tty
from dataclasses import asdict
from pathlib import Path
from typing import Any

from drivers import DRIVERS, driver_class
from edge_agent.cli.common import add_config, add_json, config, err, output
from edge_agent.cli.probe_cmd import cmd_probe
from edge_agent.cli.simulate_cmd import cmd_simulate
from edge_agent.config import AgentConfig
from edge_agent.errors import EX_CONFIG, ConfigError

BY_ID = Path("/dev/serial/by-id")


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
