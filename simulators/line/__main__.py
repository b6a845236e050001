"""``python -m simulators.line``: simulate a station, write readings and truth, check a Station."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from edge_agent.station import Station
from edge_agent.waybill import WaybillTable
from simulators.line.model import CODE_FAULTS, TRIGGER_FAULTS, WEIGHT_FAULTS, LineConfig
from simulators.line.run import Sink, check, drive, run_station, write_truth
from simulators.line.sim import LineSim


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m simulators.line",
        description="Simulate a sorting station (tunnel heads + scale) with injected faults; "
        "write readings and ground truth as JSONL, and/or check a Station against the truth.",
    )
    p.add_argument("--rate", type=float, default=6000.0, help="parcels per hour (6000)")
    p.add_argument("--duration", type=float, default=240.0, help="simulated seconds (240)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--mode", choices=("gate", "window"), default="gate", help="correlation")
    p.add_argument("--heads", type=int, default=2, help="tunnel heads (2)")
    p.add_argument("--window-ms", type=int, default=300)
    for name in (*CODE_FAULTS, *WEIGHT_FAULTS, *TRIGGER_FAULTS):
        default = getattr(LineConfig, name)
        p.add_argument(
            f"--{name.replace('_', '-')}",
            type=float,
            default=default,
            metavar="SHARE",
            help=f"share of parcels ({default})",
        )
    p.add_argument("--readings", type=Path, help="write the readings (reading.v1) as JSONL")
    p.add_argument("--truth", type=Path, help="write the ground truth as JSONL")
    p.add_argument("--check", action="store_true", help="run a Station and compare with truth")
    p.add_argument(
        "--realtime",
        action="store_true",
        help="pace the readings in real time (prints them as JSONL on stdout)",
    )
    p.add_argument("--speed", type=float, default=1.0, help="real-time speed factor")
    return p.parse_args(argv)


def _config(a: argparse.Namespace) -> LineConfig:
    faults = {n: getattr(a, n) for n in (*CODE_FAULTS, *WEIGHT_FAULTS, *TRIGGER_FAULTS)}
    return LineConfig(
        rate_per_h=a.rate,
        duration_s=a.duration,
        seed=a.seed,
        correlation=a.mode,
        heads=a.heads,
        window_ms=a.window_ms,
        **faults,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the simulator from the command line; 1 when ``--check`` finds a difference."""
    a = _args(argv)
    try:
        cfg = _config(a)
    except ValueError as err:
        print(f"line: {err}", file=sys.stderr)
        return 2
    sim = LineSim(cfg)
    readings = list(sim.readings())
    if a.readings:
        a.readings.write_text("".join(json.dumps(r) + "\n" for r in readings), encoding="utf-8")
    if a.truth:
        write_truth(sim, a.truth)
    print(
        f"{cfg.parcels} parcels, {len(readings)} readings, {len(sim.expected)} exceptions "
        f"expected ({cfg.correlation} mode)",
        file=sys.stderr,
    )
    if a.realtime:
        out: Sink = lambda r: print(json.dumps(r), flush=True)  # noqa: E731
        drive(iter(readings), dict.fromkeys(cfg.devices(), out), speed=a.speed)
    return _check(sim, readings) if a.check else 0


def _check(sim: LineSim, readings: list[dict[str, Any]]) -> int:
    station = Station(sim.cfg.station, sim.cfg.station_config(), WaybillTable())
    events = run_station(readings, station, sim.cfg.start_mono_ns)
    problems = check(sim, events)
    kinds = Counter(e.body["exception"] for e in events if e.kind == "exception")
    print(
        f"parcel events: {sum(e.kind == 'parcel' for e in events)}; exceptions: "
        f"{dict(sorted(kinds.items()))}"
    )
    print(f"rates: {station.kpis()['rates']}")
    for line in problems[:50]:
        print(f"MISMATCH {line}")
    print("truth matches" if not problems else f"{len(problems)} mismatches")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
