"""``python -m simulators.modbus_scale``: run a simulated Modbus weight indicator by hand."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import tomllib
from pathlib import Path
from typing import Any

from drivers.modbus_scale.config import RegisterMap
from simulators import announce, parse_faults
from simulators.modbus_scale.config import DEFAULT_MAP, FAULTS, ScaleSimConfig, registers_toml
from simulators.modbus_scale.sim import ScaleSim


def _map(path: Path | None) -> RegisterMap:
    if path is None:
        return DEFAULT_MAP
    raw: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    return RegisterMap.model_validate(raw.get("registers", raw))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m simulators.modbus_scale",
        description="A Modbus weight indicator (pymodbus server) with parcels, motion and faults.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Register map served without --map (PDU addresses, 0-based: 40001 is 0); the\n"
        "agent's modbus_scale device needs the same [registers] table, paste it under the\n"
        "device (its id in place of <id>):\n\n" + registers_toml(DEFAULT_MAP),
    )
    p.add_argument(
        "--transport",
        choices=["rtu", "rtu-tcp", "tcp"],
        default="rtu",
        help="rtu: RTU on a pty; rtu-tcp: RTU frames over TCP; tcp: Modbus TCP",
    )
    p.add_argument("--link", type=Path, help="rtu: stable symlink to the pty")
    p.add_argument("--host", default="127.0.0.1", help="tcp/rtu-tcp: address to listen on")
    p.add_argument("--port", type=int, default=0, help="tcp/rtu-tcp: port (0: any free port)")
    p.add_argument("--units", default="1,2", help="unit ids, e.g. 1,2,3")
    p.add_argument("--map", type=Path, help="TOML register map (the driver's [registers] keys)")
    p.add_argument("--rate", type=float, default=0.5, help="parcels per second per unit")
    p.add_argument("--parcels", type=int, default=0, help="parcels per unit (0: forever)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--faults", default="", help=f"e.g. crc=0.05,exception=0.02 ({', '.join(FAULTS)})"
    )
    p.add_argument("--swap-words", action="store_true", help="serve the other word order")
    p.add_argument("--truth", type=Path, help="append every settled weight and fault (JSONL)")
    p.add_argument("--seconds", type=float, default=0, help="stop after this long (0: on ^C)")
    return p  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Serve until interrupted; print where."""
    args = _parser().parse_args(argv)
    cfg = ScaleSimConfig(
        transport=args.transport, units=tuple(int(u) for u in args.units.split(",")),
        registers=_map(args.map), link=args.link, host=args.host, port=args.port,
        rate=args.rate, parcels=args.parcels, seed=args.seed, faults=parse_faults(args.faults),
        swap_words=args.swap_words,
    )  # fmt: skip
    sim = ScaleSim(cfg, args.truth).start()
    print(sim.describe(), flush=True)
    print(f"driver port/host: {sim.url if cfg.transport != 'tcp' else cfg.host}", flush=True)
    if cfg.transport == "tcp":
        announce(host=cfg.host, tcp_port=sim.server.port)
    else:
        announce(sim.url)
    sim.run_auto()
    done = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: done.set())
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait(args.seconds or None)
    sim.stop()
    for unit in sorted(sim.units):
        print(f"unit {unit}: settled {sim.settled(unit)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
