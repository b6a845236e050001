"""Running a simulated line through a Station, checking it against the truth, real-time pacing."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

from edge_agent.station import Station, StationEvent
from simulators.line.model import ExpectedException, ParcelTruth
from simulators.line.sim import LineSim

_MS = 1_000_000

#: A per-device consumer of readings (real-device hook): gets each reading.v1 dict.
Sink = Callable[[dict[str, Any]], None]


def run_station(
    readings: Iterable[dict[str, Any]], station: Station, start_ns: int, tick_ms: int = 100
) -> list[StationEvent]:
    """Feed ``readings`` to ``station``, ticking every ``tick_ms`` of simulated time from
    ``start_ns``, then tick until every passage is finished and one more KPI snapshot is out."""
    step = tick_ms * _MS
    now = start_ns
    events: list[StationEvent] = []
    for r in readings:
        while now + step <= r["mono_ns"]:
            now += step
            events += station.tick(now)
        events += station.feed(r)
    end = now + (station.cfg.window_ms + station.cfg.close_delay_ms) * _MS + step
    end += int(station.cfg.kpi_interval_s * 1e9)
    while now < end:
        now += step
        events += station.tick(now)
    return events


class Truthful(Protocol):
    """What :func:`check` reads: a :class:`LineSim`, or its truth translated to other ids."""

    @property
    def truth(self) -> list[ParcelTruth]: ...
    @property
    def expected(self) -> list[ExpectedException]: ...


def check(sim: Truthful, events: list[StationEvent]) -> list[str]:
    """Differences between the station's events and the injected truth (empty: all match)."""
    parcels = {e.body["parcel"]: e.body for e in events if e.kind == "parcel"}
    problems: list[str] = []
    for t in sim.truth:
        got = parcels.pop(t.parcel, None)
        if got is None:
            problems.append(f"parcel {t.n}: no parcel event (opener {t.parcel})")
        else:
            problems += _parcel_diff(t, got)
    problems += [f"unexpected parcel event {ref}" for ref in parcels]
    got_exc = Counter(
        _exc_key(e.body)
        for e in events
        if e.kind == "exception" and e.body["exception"] not in ("kpi_threshold", "device_offline")
    )
    want_exc = Counter(tuple(asdict(x).values()) for x in sim.expected)
    problems += [f"missing exception {k}" for k in (want_exc - got_exc).elements()]
    problems += [f"unexpected exception {k}" for k in (got_exc - want_exc).elements()]
    return problems


def _parcel_diff(t: ParcelTruth, got: Mapping[str, Any]) -> list[str]:
    mine = {
        "waybill": got["waybill"],
        "codes": sorted(c["code"] for c in got["codes"]),
        "flags": sorted(got["flags"]),
        "weight_g": got["weight_g"],
        "readings": sorted(got["readings"]),
        "gate": got.get("gate"),
    }
    want = {
        "waybill": t.waybill,
        "codes": t.codes,
        "flags": t.flags,
        "weight_g": t.weight_g,
        "readings": sorted(t.readings),
        "gate": t.gate,
    }
    return [f"parcel {t.n}: {k} {mine[k]!r} != {want[k]!r}" for k in mine if mine[k] != want[k]]


def _exc_key(b: Mapping[str, Any]) -> tuple[Any, ...]:
    code = b.get("code") if b["exception"] in ("duplicate", "orphan", "invalid_code") else None
    reason = b.get("reason") if b["exception"] in ("orphan", "invalid_code") else None
    return (b["exception"], b.get("parcel"), b.get("reading"), code, reason)


def drive(
    readings: Iterable[dict[str, Any]],
    sinks: Mapping[str, Sink],
    speed: float = 1.0,
    clock: Callable[[], int] = time.monotonic_ns,
    sleep: Callable[[float], None] = time.sleep,
    slips: list[float] | None = None,
) -> int:
    """Real-device hook: hand each reading to ``sinks[device]`` at its time (scaled by
    ``speed``); devices without a sink are skipped. Returns the number of readings handed on.

    ``slips``: gets, per reading handed on, how late (ms) the sink was called against its time.
    The truth assumes the readings reach the wire on time: a slip of the order of the station's
    window (a loaded machine driving many lines) makes the wire differ from the truth."""
    start_wall, start_sim, n = clock(), None, 0
    for r in readings:
        start_sim = r["mono_ns"] if start_sim is None else start_sim
        due = start_wall + (r["mono_ns"] - start_sim) / speed
        delay = (due - clock()) / 1e9
        if delay > 0:
            sleep(delay)
        sink = sinks.get(r["device"])
        if sink is not None:
            sink(r)
            n += 1
            if slips is not None:
                slips.append((clock() - due) / 1e6)
    return n


def write_truth(sim: LineSim, path: Path) -> None:
    """Write the ground truth: one ``parcel`` line per parcel, one ``exception`` line each."""
    with path.open("w", encoding="utf-8") as f:
        for t in sim.truth:
            f.write(json.dumps({"type": "parcel", **asdict(t)}) + "\n")
        for e in sim.expected:
            f.write(json.dumps({"type": "exception", **asdict(e)}) + "\n")
