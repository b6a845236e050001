"""CLI of the HID scanner simulator: dump the reports for codes, or plug a device into a spool.

::

    python -m simulators.hid_scanner dump --mode keyboard SF1
    python -m simulators.hid_scanner dump --mode pos --aim ']C1' '00069012340000000016'
    python -m simulators.hid_scanner run --spool /tmp/hid-sim --vid 0x0c2e --pid 0x0b8f \\
        --serial SIM-POS-0001 --mode pos --rate 2 --faults bad_length=0.1
    EDGE_AGENT_USB_BACKEND=sim:/tmp/hid-sim edge-agent run -c config/devices/hid_scanner.toml

``<GS>`` in a code stands for the GS separator 0x1D.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from simulators import announce, parse_faults, serve
from simulators.hid_scanner.reports import ENTER, TAB, keyboard_reports, pos_reports
from simulators.hid_scanner.scanner import FAULTS, HidScannerSim, HidSimConfig
from simulators.hid_scanner.spool import SpoolDevice


def _dump(args: argparse.Namespace) -> int:
    for raw in args.codes:
        text = raw.replace("<GS>", "\x1d")
        if args.mode == "pos":
            reports = pos_reports(text.encode(), args.aim)
        else:
            typed = (args.aim if args.with_aim else "") + text
            term = ENTER if args.terminator == "enter" else TAB
            reports = keyboard_reports(typed, terminator=term, gs=args.gs)
        print(f"# {raw!r}: {len(reports)} reports")
        for report in reports:
            print(report.hex(" "))
    return 0


def _run(args: argparse.Namespace) -> int:
    device = SpoolDevice(args.spool, args.name, vid=args.vid, pid=args.pid, serial=args.serial,
                         mode=args.mode)  # fmt: skip
    faults = parse_faults(args.faults)
    cfg = HidSimConfig(mode=args.mode, aim=args.with_aim, gs=args.gs, terminator=args.terminator,
                       rate=args.rate, seed=args.seed, faults=faults)  # fmt: skip
    print(f"device {args.vid:04x}:{args.pid:04x} plugged in {device.dir}", flush=True)
    print(f"start the agent with EDGE_AGENT_USB_BACKEND=sim:{args.spool}", file=sys.stderr)
    announce()  # a USB device: no port to configure, only how to stop
    sim = HidScannerSim(device, cfg, args.truth)
    sim.start(args.count)
    return serve(sim.wait, sim.stop, device.unplug)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mode", choices=sorted(FAULTS), default="keyboard")
    p.add_argument("--gs", choices=["ctrl", "alt_numpad"], default="ctrl", help="how GS is typed")
    p.add_argument("--terminator", choices=["enter", "tab"], default="enter")
    p.add_argument("--no-aim", dest="with_aim", action="store_false",
                   help="keyboard mode: do not type the AIM id before the code")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    p = argparse.ArgumentParser(prog="python -m simulators.hid_scanner", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("dump", help="print the reports (hex) the scanner sends for codes")
    _common(d)
    d.add_argument("--aim", default="]C0", help="AIM id (pos always; keyboard unless --no-aim)")
    d.add_argument("codes", nargs="+")
    r = sub.add_parser("run", help="plug a simulated scanner into a spool dir and scan")
    _common(r)
    r.add_argument("--spool", type=Path, required=True, help="the daemon's sim:<dir>")
    r.add_argument("--name", default="scanner-1", help="device directory name")
    r.add_argument("--vid", type=lambda s: int(s, 0), default=0x0C2E)
    r.add_argument("--pid", type=lambda s: int(s, 0), default=0x0B8F)
    r.add_argument("--serial", default="SIM-KBD-0001", help="as in config/devices/hid_scanner.toml")
    r.add_argument("--rate", type=float, default=2.0, help="codes per second")
    r.add_argument("--count", type=int, default=0, help="stop after N codes (0: never)")
    r.add_argument("--seed", type=int, default=1)
    r.add_argument("--faults", default="", help="e.g. drop_release=0.1,rollover=0.05")
    r.add_argument("--truth", type=Path, help="append every scan to this JSONL file")
    args = p.parse_args(argv)
    return _dump(args) if args.cmd == "dump" else _run(args)


if __name__ == "__main__":
    sys.exit(main())
