"""Station truth at the backend: a line's parcel and exception rows in PostgreSQL vs its truth.

The agent gave every reading its own id, so ids cannot be compared. Both sides are translated
to ``device#n`` instead: on the line's side, the n-th reading the device put on the wire
(:func:`~simulators.line.devices.wire_readings`, in time order); in the database, the reading
with that device and ``seq`` (the agent numbers each device's readings 1, 2, ... in the order
it read them). :func:`compare` first checks that every such reading has the line's kind and
value (code, weight), then runs :func:`simulators.line.check` on the translated parcel and
exception rows: every field of every parcel (waybill, codes, flags, weight, gate, readings) and
every exception (kind, parcel, reading, code, reason) must match, nothing missing, nothing
extra. :func:`kpis` compares the hub's station KPIs with the injected rates.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from typing import Any

import psycopg

from edge_agent.station import StationEvent
from edge_agent.station.events import EventKind
from simulators.line.devices import wire_readings
from simulators.line.model import ExpectedException, ParcelTruth
from simulators.line.run import check
from simulators.line.sim import LineSim


@dataclass
class Translated:
    """A line's truth with reading ids replaced by ``device#n`` (what :func:`check` reads)."""

    truth: list[ParcelTruth]
    expected: list[ExpectedException]


def wire_keys(by_id: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Line reading id -> ``device#n`` for every reading that went on the wire."""
    n: Counter[str] = Counter()
    keys = {}
    for r in wire_readings(sorted(by_id.values(), key=lambda r: r["mono_ns"])):
        n[r["device"]] += 1
        keys[r["id"]] = f"{r['device']}#{n[r['device']]}"
    return keys


def translate(sim: LineSim, keys: dict[str, str]) -> Translated:
    """``sim``'s truth in ``device#n`` terms (motion readings, never published, left out)."""

    def k(ref: str | None) -> str | None:
        return None if ref is None else keys[ref]

    truth = [
        replace(t, parcel=keys[t.parcel], readings=[keys[x] for x in t.readings if x in keys])
        for t in sim.truth
    ]
    expected = [replace(e, parcel=k(e.parcel), reading=k(e.reading)) for e in sim.expected]
    return Translated(truth, expected)


def db_events(
    conn: psycopg.Connection[Any], agent: str, station: str
) -> tuple[list[StationEvent], dict[str, tuple[str, Any]]]:
    """The agent's parcel and exception rows as station events with ``device#seq`` ids, and
    ``device#seq`` -> (kind, value) of its readings."""
    rows = conn.execute(
        "SELECT id::text, device, seq, kind, payload->'value' FROM readings WHERE agent = %s",
        (agent,),
    ).fetchall()
    key = {i: f"{d}#{s}" for i, d, s, _, _ in rows}
    values = {f"{d}#{s}": (kind, v) for _, d, s, kind, v in rows}
    events: list[StationEvent] = []
    tables: tuple[tuple[EventKind, str], ...] = (("parcel", "parcels"), ("exception", "exceptions"))
    for kind, table in tables:
        sql = f"SELECT payload FROM {table} WHERE agent = %s AND station = %s ORDER BY seq"
        for (body,) in conn.execute(sql, (agent, station)).fetchall():
            b = dict(body)
            for f in ("parcel", "reading"):
                if isinstance(b.get(f), str):
                    b[f] = key.get(b[f], f"unknown:{b[f]}")
            if kind == "parcel":
                b["readings"] = [key.get(r, f"unknown:{r}") for r in b["readings"]]
            events.append(StationEvent(kind, station, b, 0))
    return events, values


def compare(conn: psycopg.Connection[Any], agent: str, sim: LineSim,
            by_id: dict[str, dict[str, Any]]) -> list[str]:  # fmt: skip
    """Differences between the agent's rows in PostgreSQL and the line's truth (empty: match)."""
    keys = wire_keys(by_id)
    events, values = db_events(conn, agent, sim.cfg.station)
    problems = []
    for rid, k in keys.items():
        r = by_id[rid]
        got = values.pop(k, None)
        if got is None:
            problems.append(f"reading {k} ({r['kind']} {r['value']!r}) not in PostgreSQL")
        elif got != (r["kind"], r["value"]):
            problems.append(f"reading {k}: {got} != {(r['kind'], r['value'])}")
    problems += [f"unexpected reading {k} {v}" for k, v in values.items()]
    return problems + check(translate(sim, keys), events)


def injected_rates(sim: LineSim) -> dict[str, float]:
    """The KPIs the injected faults make: no-read and reconciliation-error rates, percent."""
    n = len(sim.truth)
    noread = sum(1 for t in sim.truth if "noread" in t.flags)
    unrec = sum(
        1 for t in sim.truth if t.waybill is None or {"no_weight", "unstable_weight"} & set(t.flags)
    )
    return {
        "noread_pct": round(100.0 * noread / n, 3),
        "reconciliation_pct": round(100.0 * unrec / n, 3),
    }


def kpis(view: dict[str, Any], agent: str, sim: LineSim) -> list[str]:
    """Differences between the hub's station KPIs (``hub status --json``) and the injected
    rates; ``view`` is :func:`edge_agent.hub.fleet.fleet`'s dict."""
    st = [s for s in view["stations"] if s["agent"] == agent and s["station"] == sim.cfg.station]
    if len(st) != 1:
        return [f"{agent}: {len(st)} KPI rows for station {sim.cfg.station}"]
    want = {"parcels": len(sim.truth), **injected_rates(sim)}
    return [
        f"{agent}: KPI {k} {st[0][k]} != injected {v}" for k, v in want.items() if st[0][k] != v
    ]
