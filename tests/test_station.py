"""Sorting-station logic against a simulated line's injected truth, hand-made edge cases and
properties. Every emitted body is validated against its JSON Schema with the daemon's fields."""

from __future__ import annotations

import json
import tomllib
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from pydantic import ValidationError
from referencing import Registry, Resource

from edge_agent.errors import ConfigError
from edge_agent.reading import uuid7
from edge_agent.station import (
    Station,
    StationConfig,
    StationEvent,
    validate_stations,
)
from edge_agent.waybill import WaybillConfig, WaybillTable
from simulators.line import LineConfig, LineSim, check, drive, run_station
from simulators.line.__main__ import main as line_main

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "edge_agent" / "schemas"
MS = 1_000_000
T0 = 5_000 * 1_000_000_000  # an arbitrary mono_ns origin
SF1, SF2 = "SF1000000000001", "SF1000000000002"
ZTO = "75312345678901"
SSCC = "00069012340000000016"


# ---- helpers ---------------------------------------------------------------------------------
def _validators() -> dict[str, Draft202012Validator]:
    resources = []
    for f in SCHEMAS.glob("*.json"):
        doc = json.loads(f.read_text())
        resources += [
            (f.name, Resource.from_contents(doc)),
            (doc["$id"], Resource.from_contents(doc)),
        ]
    registry = Registry().with_resources(resources)
    return {
        kind: Draft202012Validator(
            json.loads((SCHEMAS / f"{kind}.v1.json").read_text()), registry=registry
        )
        for kind in ("parcel", "exception", "kpi", "reading")
    }


VALIDATORS = _validators()


def envelope(event: StationEvent, seq: int) -> dict[str, Any]:
    """The payload as the daemon commits it: its fields filled in, then the body."""
    return event.payload(
        event_id=uuid7(),
        seq=seq,
        agent="agent-1",
        site="S1",
        line="L1",
        ts="2026-01-01T00:00:00.000000Z",
    )


def validate(events: Iterable[StationEvent]) -> None:
    """Every event is JSON-serialisable and valid against its schema; priorities as promised."""
    for n, e in enumerate(events, 1):
        payload = envelope(e, n)
        json.dumps(payload, allow_nan=False)
        errors = sorted(VALIDATORS[e.kind].iter_errors(payload), key=str)
        assert not errors, f"{e.kind}: {errors[0].message} in {payload}"
        assert e.priority == (1 if e.kind == "exception" else 0)


class Feeder:
    """Hand-made readings for one station; every returned event is schema-checked."""

    def __init__(self, **cfg: Any) -> None:
        base: dict[str, Any] = {
            "devices": ["tunnel_1", "tunnel_2", "handheld", "scale"],
            "correlation": "window",
            "window_ms": 300,
            "close_delay_ms": 0,
            "dedup_window_ms": 2000,
            "weight_devices": ["scale"],
            "require_weight": False,
        }
        base.update(cfg)
        if base["correlation"] == "window" and "trigger_devices" not in cfg:
            base["trigger_devices"] = ["tunnel_1", "tunnel_2"]
        self.station = Station("st1", StationConfig.model_validate(base), WaybillTable())
        self.events: list[StationEvent] = []
        self.n = 0

    def read(self, device: str, kind: str, ms: float, value: Any = None, **extra: Any) -> str:
        """Feed one reading at T0 + ``ms``; returns its id."""
        self.n += 1
        rid = f"r{self.n}"
        r = {
            "id": rid,
            "device": device,
            "seq": self.n,
            "kind": kind,
            "value": value,
            "mono_ns": T0 + int(ms * MS),
            **extra,
        }
        if kind == "weight":
            r.setdefault("stable", True)
            r.setdefault("unit", "g")
        self._keep(self.station.feed(r))
        return rid

    def tick(self, ms: float) -> list[StationEvent]:
        """Tick at T0 + ``ms``; returns the new events."""
        new = self.station.tick(T0 + int(ms * MS))
        self._keep(new)
        return new

    def _keep(self, new: list[StationEvent]) -> None:
        validate(new)
        self.events += new

    def parcels(self) -> list[dict[str, Any]]:
        return [e.body for e in self.events if e.kind == "parcel"]

    def exceptions(self, kind: str | None = None) -> list[dict[str, Any]]:
        return [
            e.body
            for e in self.events
            if e.kind == "exception" and kind in (None, e.body["exception"])
        ]


# ---- the test: a simulated line against its injected truth ---------------------------
@pytest.mark.parametrize("mode", ["gate", "window"])
@pytest.mark.parametrize("seed", [1, 3])
def test_simulated_line_matches_injected_truth(mode: Literal["gate", "window"], seed: int) -> None:
    cfg = LineConfig(correlation=mode, seed=seed, duration_s=240, rate_per_h=6000)
    sim = LineSim(cfg)
    readings = list(sim.readings())
    station = Station("st1", cfg.station_config(), WaybillTable())
    events = run_station(readings, station, cfg.start_mono_ns)
    validate(events)
    for r in readings[:50]:
        assert not list(VALIDATORS["reading"].iter_errors(r))

    assert check(sim, events) == []
    _assert_every_reading_once(readings, events)
    _assert_exception_counts(sim, events, mode)
    _assert_kpis(events, cfg)
    if mode == "gate":
        _assert_a_late_result_fell_into_another_window(readings, events)


def _assert_a_late_result_fell_into_another_window(
    readings: list[dict[str, Any]], events: list[StationEvent]
) -> None:
    """The trap is in the data: time alone would have put a late result on the next parcel."""
    at = {r["id"]: r["mono_ns"] for r in readings}
    windows = [
        (
            e.body["parcel"],
            e.body["timing"]["opened_mono_ns"],
            e.body["timing"]["window_end_mono_ns"],
        )
        for e in events
        if e.kind == "parcel"
    ]
    trapped = [
        e.body
        for e in events
        if e.kind == "exception"
        and e.body["exception"] == "orphan"
        and any(a <= at[e.body["reading"]] <= b and p != e.body["parcel"] for p, a, b in windows)
    ]
    assert trapped


def _assert_every_reading_once(readings: list[dict[str, Any]], events: list[StationEvent]) -> None:
    """0 misattributed and 0 lost: each reading id in exactly one parcel or one exception."""
    places: Counter[str] = Counter()
    for e in events:
        if e.kind == "parcel":
            places.update(e.body["readings"])
        elif e.kind == "exception" and "reading" in e.body:
            places[e.body["reading"]] += 1
    assert places == Counter(r["id"] for r in readings)


def _assert_exception_counts(sim: LineSim, events: list[StationEvent], mode: str) -> None:
    kinds = Counter(e.body["exception"] for e in events if e.kind == "exception")
    parcels = [e for e in events if e.kind == "parcel"]
    assert len(parcels) == 400
    # 1 % no-read, 2 % multi-read, 1 % invalid, 0.5 % overweight of 400 parcels
    assert (kinds["noread"], kinds["multiread"], kinds["invalid_code"]) == (4, 8, 4)
    assert kinds["overweight"] == 2
    assert kinds["underweight"] == kinds["no_weight"] == kinds["unstable_weight"] == 0
    dup_parcels = sum("duplicate" in f for f in sim.faults)
    late_parcels = sum("late" in f for f in sim.faults)
    assert (dup_parcels, late_parcels) == (2, 2)
    # every injected duplicate trigger repeats one code; every late telegram is one reading
    if mode == "gate":
        assert (kinds["duplicate"], kinds["orphan"]) == (2, 2)
        assert all(
            e.body["reason"] == "late" and "parcel" in e.body
            for e in events
            if e.kind == "exception" and e.body["exception"] == "orphan"
        )
    else:  # a late code already read on time is a duplicate; a late NoRead an orphan
        assert kinds["duplicate"] >= 2
        assert kinds["duplicate"] + kinds["orphan"] == 4
    assert kinds["device_offline"] == 0


def _assert_kpis(events: list[StationEvent], cfg: LineConfig) -> None:
    snaps = [e.body for e in events if e.kind == "kpi"]
    assert len(snaps) == int(cfg.duration_s // 60) + 1
    last = snaps[-1]
    dups = last["totals"]["duplicates"]
    assert last["totals"]["parcels"] == 400
    assert last["totals"] == last["counts"]  # the 1 h window holds the whole run
    rates = last["rates"]
    assert (rates["noread_pct"], rates["invalid_pct"], rates["multiread_pct"]) == (1.0, 1.0, 2.0)
    assert last["totals"]["overweight"] / 400 * 100 == 0.5
    assert rates["duplicate_pct"] == 100 * dups / 400
    assert rates["scan_error_pct"] == 100 * (16 + dups) / 400  # noread + invalid + multiread
    assert rates["reconciliation_pct"] == 4.0
    mid = snaps[2]  # at 180 s: the line is running at its rate
    assert mid["rates"]["parcels_per_h"] == pytest.approx(6000, rel=0.02)
    raised = [
        e.body["details"]["kpi"]
        for e in events
        if e.kind == "exception" and e.body["exception"] == "kpi_threshold"
    ]
    assert sorted(raised) == ["reconciliation_pct", "scan_error_pct"]
    assert last["alarms"] == ["reconciliation_pct", "scan_error_pct"]


def test_same_seed_same_events() -> None:
    def run() -> list[dict[str, Any]]:
        cfg = LineConfig(duration_s=60, seed=3)
        sim = LineSim(cfg)
        st1 = Station("st1", cfg.station_config(), WaybillTable())
        return [e.body for e in run_station(sim.readings(), st1, cfg.start_mono_ns)]

    assert run() == run()


def test_simulator_with_every_weight_fault_and_three_heads() -> None:
    cfg = LineConfig(
        duration_s=120,
        heads=3,
        seed=5,
        underweight=0.02,
        unstable=0.02,
        no_weight=0.02,
        correlation="window",
    )
    sim = LineSim(cfg)
    events = run_station(
        sim.readings(), Station("st1", cfg.station_config(), WaybillTable()), cfg.start_mono_ns
    )
    validate(events)
    assert check(sim, events) == []
    kinds = Counter(e.body["exception"] for e in events if e.kind == "exception")
    assert (kinds["underweight"], kinds["unstable_weight"], kinds["no_weight"]) == (4, 4, 4)


def test_check_reports_a_misattribution() -> None:
    cfg = LineConfig(duration_s=30, seed=2)
    sim = LineSim(cfg)
    events = run_station(
        sim.readings(), Station("st1", cfg.station_config(), WaybillTable()), cfg.start_mono_ns
    )
    parcels = [e for e in events if e.kind == "parcel"]
    moved = parcels[1].body["readings"].pop()
    parcels[0].body["readings"].append(moved)
    problems = check(sim, events)
    assert len(problems) == 2 and all("readings" in p for p in problems)


def test_drive_paces_readings_to_device_sinks() -> None:
    readings = list(LineSim(LineConfig(duration_s=3, seed=4)).readings())
    clock = [0]
    slept: list[float] = []
    got: list[tuple[str, int]] = []

    def sleep(s: float) -> None:
        slept.append(s)
        clock[0] += int(s * 1e9)

    sinks = {
        "tunnel_1": lambda r: got.append(("tunnel_1", clock[0])),
        "scale_1": lambda r: got.append(("scale_1", clock[0])),
    }
    n = drive(readings, sinks, speed=2.0, clock=lambda: clock[0], sleep=sleep)
    wanted = [r for r in readings if r["device"] in sinks]
    assert n == len(wanted) == len(got) > 0
    t0 = readings[0]["mono_ns"]
    assert [t for _, t in got] == [(r["mono_ns"] - t0) // 2 for r in wanted]


def test_line_cli_writes_readings_and_truth_and_checks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "--duration",
        "30",
        "--mode",
        "window",
        "--seed",
        "9",
        "--readings",
        str(tmp_path / "r.jsonl"),
        "--truth",
        str(tmp_path / "t.jsonl"),
        "--check",
    ]
    assert line_main(args) == 0
    out = capsys.readouterr().out
    assert "truth matches" in out
    readings = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    truth = [json.loads(x) for x in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert sum(t["type"] == "parcel" for t in truth) == 50
    assert {r["device"] for r in readings} == {"tunnel_1", "tunnel_2", "scale_1"}
    assert line_main(["--rate", "20000"]) == 2  # windows would overlap: refused


# ---- parcels, dedup, waybill choice ----------------------------------------------------------
def test_one_parcel_per_passage_with_codes_deduplicated() -> None:
    f = Feeder(require_weight=True)
    opener = f.read(
        "tunnel_1", "barcode", 0, SF1, symbology="code128", ts="2026-01-01T00:00:00.000000Z"
    )
    f.read("tunnel_2", "barcode", 40, SF1)
    f.read("tunnel_2", "noread", 41)
    f.read("scale", "weight", 60, 1210.0, stable=False)
    f.read("scale", "weight", 150, 1200.0)
    f.read("tunnel_1", "barcode", 200, SF1)
    assert f.tick(300) == []  # the window ends at 300 ms inclusive
    [done] = [e for e in f.tick(301) if e.kind == "parcel"]
    p = done.body
    assert p["parcel"] == opener and p["waybill"] == SF1 and p["carrier"] == "sf"
    assert p["weight_g"] == 1200.0 and p["weight_device"] == "scale"
    assert p["codes"] == [
        {
            "code": SF1,
            "carrier": "sf",
            "valid": True,
            "role": "waybill",
            "check": "none",
            "reads": 3,
            "devices": ["tunnel_1", "tunnel_2"],
            "first_ms": 0.0,
            "symbology": "code128",
        }
    ]
    assert p["counts"] == {"reads": 3, "repeats": 2, "noreads": 1, "weights": 2}
    assert p["devices"] == ["scale", "tunnel_1", "tunnel_2"]
    assert p["readings"] == [f"r{i}" for i in range(1, 7)]
    assert p["flags"] == [] and f.exceptions() == []
    assert p["timing"] == {
        "opened_mono_ns": T0,
        "window_end_mono_ns": T0 + 300 * MS,
        "last_reading_ms": 200.0,
        "weight_ms": 150.0,
    }
    assert p["opened_ts"] == "2026-01-01T00:00:00.000000Z"


def test_duplicate_in_another_passage_is_counted_and_never_attached() -> None:
    f = Feeder(dedup_window_ms=1000)
    f.read("tunnel_1", "barcode", 0, SF1)
    dup = f.read("handheld", "barcode", 500, SF1)  # outside every window, within dedup
    f.read("tunnel_1", "barcode", 900, ZTO)  # next parcel
    dup2 = f.read("tunnel_2", "barcode", 950, SF1)  # inside ZTO's window: still SF1's
    f.read("tunnel_1", "barcode", 3000, SF1)  # 2050 ms after the last SF1 read: a new passage
    f.tick(10_000)
    [a, b, c] = f.parcels()
    assert (a["waybill"], b["waybill"], c["waybill"]) == (SF1, ZTO, SF1)
    assert b["readings"] == ["r3"] and b["flags"] == []
    dups = f.exceptions("duplicate")
    assert [(d["reading"], d["parcel"], d["code"]) for d in dups] == [
        (dup, "r1", SF1),
        (dup2, "r1", SF1),
    ]
    assert dups[1]["details"]["since_last_ms"] == 450.0  # the window slides with each read
    assert f.station.kpis()["totals"]["duplicates"] == 2


def test_duplicate_trigger_in_gate_mode_opens_no_parcel() -> None:
    f = Feeder(correlation="gate")
    f.read("tunnel_1", "barcode", 0, SF1, gate=10)
    f.read("tunnel_1", "barcode", 80, SF1, gate=11)  # photo-eye bounce: a new gate, same code
    f.read("tunnel_2", "barcode", 90, SF1, gate=10)  # another head: a repeat of gate 10
    f.tick(1000)
    [p] = f.parcels()
    assert p["gate"] == 10 and p["counts"]["reads"] == 2 and p["readings"] == ["r1", "r3"]
    [d] = f.exceptions()
    assert (d["exception"], d["reading"], d["gate"], d["parcel"]) == ("duplicate", "r2", 11, "r1")


def test_multiread_and_waybill_choice() -> None:
    f = Feeder()
    f.read("tunnel_1", "barcode", 0, SF1)
    f.read("tunnel_2", "barcode", 10, ZTO)  # two carriers' waybills: multiread
    f.read("tunnel_1", "barcode", 1000, SF2)
    f.read("tunnel_2", "barcode", 1010, SSCC)  # waybill + SSCC: the waybill is chosen
    f.read("tunnel_1", "barcode", 2000, "00069012340000000024")  # SSCC, check digit is 3
    f.read("tunnel_1", "barcode", 3000, "75312345678902")
    f.read("tunnel_1", "barcode", 3010, "SF12345")  # valid + invalid: chosen + invalid_code
    f.tick(10_000)
    p = f.parcels()
    assert [x["waybill"] for x in p] == [None, SF2, None, "75312345678902"]
    assert [x["flags"] for x in p] == [["multiread"], [], ["invalid_code"], ["invalid_code"]]
    [mr] = f.exceptions("multiread")
    assert mr["details"]["codes"] == [SF1, ZTO] and mr["parcel"] == "r1"
    inv = f.exceptions("invalid_code")
    assert [(x["code"], x["reason"], x["parcel"]) for x in inv] == [
        ("00069012340000000024", "check_digit", "r5"),
        ("SF12345", "no_pattern", "r6"),
    ]
    assert inv[0]["details"] == {"matched": "sscc"} and "waybill" not in inv[0]
    assert inv[1]["waybill"] == "75312345678902" and inv[1]["device"] == "tunnel_1"


def test_sscc_is_chosen_when_it_is_the_only_code() -> None:
    f = Feeder()
    f.read("tunnel_1", "barcode", 0, SSCC)
    f.tick(1000)
    assert (f.parcels()[0]["waybill"], f.parcels()[0]["carrier"]) == (SSCC, "sscc")


def test_noread_parcel_and_carrier_filter() -> None:
    f = Feeder(carriers=["zto"])
    f.read("tunnel_1", "noread", 0)
    f.read("tunnel_2", "noread", 20)
    f.read("tunnel_1", "barcode", 1000, SF1)  # valid SF, but this station takes ZTO only
    f.tick(5000)
    a, b = f.parcels()
    assert a["flags"] == ["noread"] and a["counts"]["noreads"] == 2 and a["waybill"] is None
    assert b["flags"] == ["invalid_code"] and b["codes"][0]["reason"] == "carrier_not_accepted"
    [nr] = f.exceptions("noread")
    assert nr["parcel"] == "r1" and nr["details"] == {
        "noreads": 2,
        "devices": ["tunnel_1", "tunnel_2"],
    }


# ---- weights ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("weights", "flags", "weight_g"),
    [
        ([(1200.0, True)], [], 1200.0),
        ([(31_000.0, True)], ["overweight"], 31_000.0),
        ([(20.0, True)], ["underweight"], 20.0),
        ([(900.0, False)], ["unstable_weight"], None),
        ([], ["no_weight"], None),
        ([(0.0, True)], ["no_weight"], None),  # the empty platform is ignored
        ([(500.0, True), (40_000.0, False), (700.0, True)], [], 700.0),  # last stable wins
    ],
)
def test_weight_rules(
    weights: list[tuple[float, bool]], flags: list[str], weight_g: float | None
) -> None:
    f = Feeder(require_weight=True, min_weight_g=50, max_weight_g=30_000)
    f.read("tunnel_1", "barcode", 0, SF1)
    for i, (g, stable) in enumerate(weights):
        f.read("scale", "weight", 10 + i, g, stable=stable)
    f.tick(1000)
    [p] = f.parcels()
    assert (p["flags"], p["weight_g"]) == (flags, weight_g)
    assert [e["exception"] for e in f.exceptions()] == flags
    if flags in (["overweight"], ["underweight"]):
        limit = 30_000 if flags == ["overweight"] else 50
        assert f.exceptions()[0]["details"] == {"weight_g": weight_g, "limit_g": limit}
        assert f.exceptions()[0]["waybill"] == SF1


def test_weight_is_required_by_default_only_where_a_scale_is_listed() -> None:
    base = {
        "devices": ["t1", "sc"],
        "correlation": "window",
        "window_ms": 300,
        "dedup_window_ms": 0,
    }
    assert StationConfig.model_validate({**base, "weight_devices": ["sc"]}).weight_required
    assert not StationConfig.model_validate(base).weight_required
    assert StationConfig.model_validate({**base, "require_weight": True}).weight_required


def test_weights_of_other_devices_are_not_the_stations_weight() -> None:
    f = Feeder(require_weight=True)
    f.read("tunnel_1", "barcode", 0, SF1)
    f.read("handheld", "weight", 10, 800.0)
    f.tick(1000)
    assert f.parcels()[0]["flags"] == ["no_weight"] and f.station.ignored == 1


def test_weight_not_required_gives_no_flag() -> None:
    f = Feeder(require_weight=False)
    f.read("tunnel_1", "barcode", 0, SF1)
    f.tick(1000)
    assert f.parcels()[0]["flags"] == [] and f.exceptions() == []


# ---- orphans ---------------------------------------------------------------------------------
def test_orphans_in_window_mode_are_never_attached_to_the_nearest_parcel() -> None:
    f = Feeder()
    f.read("tunnel_1", "barcode", 0, SF1)
    w = f.read("scale", "weight", 301, 900.0)  # 1 ms after the window
    h = f.read("handheld", "barcode", 320, ZTO)  # handhelds do not open windows here
    n = f.read("tunnel_2", "noread", 700)  # a trigger device: opens a passage
    f.tick(5000)
    assert [p["readings"] for p in f.parcels()] == [["r1"], [n]]
    orphans = f.exceptions("orphan")
    assert [(o["reading"], o["reason"], o["details"]["kind"]) for o in orphans] == [
        (w, "no_window", "weight"),
        (h, "no_window", "barcode"),
    ]
    assert orphans[0]["details"]["weight_g"] == 900.0 and orphans[1]["code"] == ZTO
    assert "parcel" not in orphans[0]


def test_late_gate_result_is_an_orphan_naming_its_parcel() -> None:
    f = Feeder(correlation="gate", gate_memory_ms=5000)
    f.read("tunnel_1", "barcode", 0, SF1, gate=1)
    f.read("tunnel_1", "barcode", 500, ZTO, gate=2)
    late = f.read("tunnel_2", "barcode", 550, SF2, gate=1)  # inside gate 2's time window
    f.tick(10_000)
    fresh = f.read("tunnel_2", "barcode", 10_000, "75312345678903", gate=1)  # memory over
    f.tick(20_000)
    a, b, c = f.parcels()
    assert (a["readings"], b["readings"], c["readings"]) == (["r1"], ["r2"], [fresh])
    [o] = f.exceptions("orphan")
    assert (o["reading"], o["reason"], o["parcel"], o["gate"]) == (late, "late", "r1", 1)


def test_late_gate_result_while_its_passage_waits_for_close_delay() -> None:
    f = Feeder(correlation="gate", close_delay_ms=100)
    f.read("tunnel_1", "barcode", 0, SF1, gate=4)
    on_time = f.read("tunnel_2", "barcode", 300, SF1, gate=4)  # the window end is inclusive
    late = f.read("tunnel_2", "noread", 350, gate=4)  # passage not published yet, but too late
    f.tick(1000)
    [p] = f.parcels()
    assert p["readings"] == ["r1", on_time] and p["counts"]["noreads"] == 0
    [o] = f.exceptions()
    assert (o["exception"], o["reading"], o["reason"], o["parcel"]) == (
        "orphan",
        late,
        "late",
        "r1",
    )


def test_ambiguous_reading_between_overlapping_gate_windows_is_an_orphan() -> None:
    f = Feeder(correlation="gate")
    f.read("tunnel_1", "barcode", 0, SF1, gate=1)
    f.read("tunnel_1", "barcode", 100, ZTO, gate=2)  # parcels too close: windows overlap
    w = f.read("scale", "weight", 150, 1000.0)
    alone = f.read("scale", "weight", 350, 1100.0)  # only gate 2's window is still open
    f.tick(5000)
    [o] = f.exceptions("orphan")
    assert (o["reading"], o["reason"]) == (w, "ambiguous")
    assert f.parcels()[1]["readings"] == ["r2", alone] and f.parcels()[1]["weight_g"] == 1100.0


def test_close_delay_keeps_the_window_for_readings_still_in_the_pipeline() -> None:
    f = Feeder(close_delay_ms=100)
    f.read("tunnel_1", "barcode", 0, SF1)
    f.read("tunnel_2", "barcode", 320, ZTO)  # a new passage (after the first window)
    f.read("scale", "weight", 290, 800.0)  # older reading fed later: still in the 1st window
    assert f.tick(400) == []
    [p] = [e for e in f.tick(401) if e.kind == "parcel"]
    assert p.body["readings"] == ["r1", "r3"]


# ---- devices ---------------------------------------------------------------------------------
def test_device_offline_once_per_outage_for_needed_devices_only() -> None:
    f = Feeder(optional_devices=["handheld"])
    s = f.station
    got = s.device_state("scale", "reconnecting", T0)
    validate(got)
    assert [(e.body["exception"], e.body["device"], e.body["details"]) for e in got] == [
        ("device_offline", "scale", {"state": "reconnecting"})
    ]
    assert s.device_state("scale", "reconnecting", T0 + 1) == []
    assert s.kpis()["devices_offline"] == ["scale"]
    assert s.device_state("scale", "connected", T0 + 2) == []
    assert s.kpis()["devices_offline"] == []
    assert len(s.device_state("scale", "disconnected", T0 + 3)) == 1
    assert s.device_state("handheld", "reconnecting", T0 + 4) == []  # optional
    assert s.device_state("elsewhere", "reconnecting", T0 + 5) == []  # not this station's
    assert s.device_state("tunnel_1", "stopped", T0 + 6) == []  # shutdown is not an outage
    assert s.device_state("tunnel_1", "starting", T0 + 7) == []


# ---- KPIs ------------------------------------------------------------------------------------
def test_kpi_snapshots_roll_and_thresholds_raise_then_clear() -> None:
    f = Feeder(
        kpi_interval_s=10,
        kpi_window_s=20,
        thresholds={"scan_error_pct": 20.0, "reconciliation_pct": None, "min_parcels": 4},
    )
    f.tick(0)
    for i in range(5):  # 0..4 s: 5 parcels, 2 no-reads (40 %)
        f.read("tunnel_1", "noread" if i < 2 else "barcode", i * 1000, f"SF10000000000{i:02d}")
    snaps = [e.body for e in f.tick(10_000) if e.kind == "kpi"]
    raised = f.exceptions("kpi_threshold")
    assert snaps[0]["counts"]["parcels"] == 5 and snaps[0]["rates"]["noread_pct"] == 40.0
    assert [(r["reason"], r["details"]["kpi"], r["details"]["value"]) for r in raised] == [
        ("raised", "scan_error_pct", 40.0)
    ]
    assert snaps[0]["alarms"] == ["scan_error_pct"] and snaps[0]["thresholds"] == {
        "scan_error_pct": 20.0
    }
    assert f.tick(20_000)[0].body["alarms"] == ["scan_error_pct"]  # still 2 of 5
    for i in range(10):  # 20..29 s: 10 good parcels
        f.read("tunnel_1", "barcode", 20_000 + i * 1000, f"SF10000000001{i:02d}")
    snaps = [e.body for e in f.tick(30_000) if e.kind == "kpi"]
    # window 20 s: the first 5 parcels (closed at 0.3..4.3 s) fell out
    assert snaps[0]["counts"]["parcels"] == 10 and snaps[0]["totals"]["parcels"] == 15
    assert snaps[0]["rates"]["scan_error_pct"] == 0.0 and snaps[0]["totals"]["noread"] == 2
    cleared = f.exceptions("kpi_threshold")[-1]
    assert (cleared["reason"], cleared["details"]["value"]) == ("cleared", 0.0)
    assert [e.body["mono_ns"] for e in f.events if e.kind == "kpi"] == [
        T0 + s * 1_000_000_000 for s in (10, 20, 30)
    ]


def test_kpi_snapshot_after_a_long_gap_is_not_a_burst() -> None:
    f = Feeder(kpi_interval_s=10)
    f.tick(0)
    assert sum(e.kind == "kpi" for e in f.tick(95_000)) == 1
    assert f.tick(99_000) == []
    assert sum(e.kind == "kpi" for e in f.tick(100_000)) == 1


def test_no_threshold_below_min_parcels_and_empty_rates_are_null() -> None:
    f = Feeder(kpi_interval_s=10)
    f.tick(0)
    f.read("tunnel_1", "noread", 100)
    snap = next(e.body for e in f.tick(10_000) if e.kind == "kpi")
    assert snap["rates"]["noread_pct"] == 100.0 and f.exceptions("kpi_threshold") == []
    empty = Feeder().station.kpis()
    assert empty["rates"]["noread_pct"] is None and empty["counts"]["parcels"] == 0


# ---- input hygiene, config -------------------------------------------------------------------
@pytest.mark.parametrize(
    "bad",
    [
        {},
        {"device": "tunnel_1", "kind": "barcode", "mono_ns": T0},  # no value
        {"device": "tunnel_1", "kind": "barcode", "value": 5, "mono_ns": T0},
        {"device": "tunnel_1", "kind": "weight", "value": float("nan"), "mono_ns": T0},
        {"device": "tunnel_1", "kind": "weight", "value": True, "mono_ns": T0},
        {"device": "tunnel_1", "kind": "laser", "value": "x", "mono_ns": T0},
        {"device": "tunnel_1", "kind": "noread", "mono_ns": -1},
        {"device": "tunnel_1", "kind": "noread", "mono_ns": 1.5},
        {"device": 7, "kind": "noread", "mono_ns": T0},
    ],
)
def test_malformed_readings_are_counted_not_raised(bad: dict[str, Any]) -> None:
    f = Feeder()
    assert f.station.feed(bad) == []
    assert f.station.ignored == 1 and f.station.kpis()["open_passages"] == 0


def test_readings_of_other_devices_and_heartbeats_open_nothing() -> None:
    f = Feeder()
    f.read("elsewhere", "barcode", 0, SF1)
    f.read("tunnel_1", "heartbeat", 10)
    f.tick(5000)
    assert f.events == [] and f.station.ignored == 1


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"trigger_devices": ["nope"]}, "devices of this station (tunnel_1, scale); not: ['nope']"),
        ({"correlation": "gate", "trigger_devices": ["tunnel_1"]}, "apply to 'window'"),
        ({"min_weight_g": 500, "max_weight_g": 100}, "more than min_weight_g (500.0)"),
        ({"devices": ["a", "a"]}, "each device once; repeated: ['a']"),
        ({"windo_ms": 5}, "Extra inputs"),
        ({"window_ms": 0}, "greater than or equal to 1"),
        ({"kpi_interval_s": 60, "kpi_window_s": 30}, "at least kpi_interval_s (60.0)"),
        ({"thresholds": {"scan_error_pct": 101}}, "less than or equal to 100"),
        ({"correlation": "nearest"}, "'gate' or 'window'"),
    ],
)
def test_station_config_errors(change: dict[str, Any], needle: str) -> None:
    base = {
        "devices": ["tunnel_1", "scale"],
        "correlation": "window",
        "window_ms": 300,
        "dedup_window_ms": 1000,
    }
    with pytest.raises(ValidationError) as err:
        StationConfig.model_validate({**base, **change})
    assert needle in str(err.value)


def test_validate_stations_names_file_section_and_key(tmp_path: Path) -> None:
    file = tmp_path / "line.toml"
    cfg = StationConfig(devices=["t1"], correlation="gate", window_ms=300, dedup_window_ms=0)
    wb = WaybillConfig()
    validate_stations({"a": cfg}, ["t1"], wb, file)
    with pytest.raises(
        ConfigError, match=r"line.toml: \[stations.a\] devices: \['t1'\] not defined"
    ):
        validate_stations({"a": cfg}, ["t2"], wb, file)
    with pytest.raises(
        ConfigError, match=r"\[stations.b\] devices: 't1' already belongs to station 'a'"
    ):
        validate_stations({"a": cfg, "b": cfg}, ["t1"], wb, file)
    odd = cfg.model_copy(update={"carriers": ["dhl"]})
    with pytest.raises(ConfigError, match=r"\[stations.a\] carriers: unknown \['dhl'\]"):
        validate_stations({"a": odd}, ["t1"], wb, file)


def test_example_station_toml_is_valid() -> None:
    raw = tomllib.loads((ROOT / "config" / "devices" / "station.toml").read_text())
    stations = {k: StationConfig.model_validate(v) for k, v in raw["stations"].items()}
    waybills = WaybillConfig.model_validate(raw["waybills"])
    devices = {d for s in stations.values() for d in s.devices}
    validate_stations(stations, devices, waybills, Path("station.toml"))
    table = WaybillTable.from_config(waybills)
    for sid, s in stations.items():
        Station(sid, s, table)


# ---- properties ------------------------------------------------------------------------------
DEVICES = ["t1", "t2", "hh", "sc"]
CODES = [SF1, SF2, ZTO, SSCC, "SF12345", "", "\x00", "RR473124829GB"]

reading_st = st.fixed_dictionaries(
    {
        "device": st.sampled_from([*DEVICES, "other"]),
        "kind": st.sampled_from(["barcode", "barcode", "noread", "weight", "heartbeat"]),
        "dt_ms": st.integers(-400, 900),
        "gate": st.one_of(st.none(), st.integers(0, 6)),
        "code": st.sampled_from(CODES),
        "grams": st.sampled_from([0.0, 5.0, 800.0, 40_000.0]),
        "stable": st.booleans(),
        "tick": st.one_of(st.none(), st.integers(0, 2000)),
    }
)


def _station(mode: str, triggers: list[str], dedup: int, window: int) -> Station:
    cfg: dict[str, Any] = {
        "devices": DEVICES,
        "correlation": mode,
        "window_ms": window,
        "dedup_window_ms": dedup,
        "weight_devices": ["sc"],
        "min_weight_g": 10,
        "max_weight_g": 30_000,
        "kpi_interval_s": 1,
        "kpi_window_s": 5,
        "gate_memory_ms": 1000,
        "thresholds": {"min_parcels": 1, "noread_pct": 10},
    }
    if mode == "window":
        cfg["trigger_devices"] = triggers
    return Station("p", StationConfig.model_validate(cfg), WaybillTable())


@settings(max_examples=150, deadline=None)
@given(
    mode=st.sampled_from(["gate", "window"]),
    triggers=st.lists(st.sampled_from(DEVICES), unique=True),
    dedup=st.sampled_from([0, 200, 5000]),
    window=st.sampled_from([1, 150, 400]),
    items=st.lists(reading_st, max_size=60),
)
def test_every_barcode_ends_in_exactly_one_parcel_or_exception(
    mode: str, triggers: list[str], dedup: int, window: int, items: list[dict[str, Any]]
) -> None:
    station = _station(mode, triggers, dedup, window)
    events: list[StationEvent] = []
    fed: dict[str, str] = {}
    t = T0
    for n, it in enumerate(items):
        t = max(0, t + it["dt_ms"] * MS)  # out-of-order times too
        rid = f"x{n}"
        value = {"barcode": it["code"], "weight": it["grams"]}.get(it["kind"])
        r = {
            "id": rid,
            "device": it["device"],
            "seq": n + 1,
            "kind": it["kind"],
            "value": value,
            "mono_ns": t,
            "stable": it["stable"],
            "gate": it["gate"],
        }
        events += station.feed(r)
        if it["device"] != "other" and it["kind"] in ("barcode", "noread"):
            fed[rid] = it["kind"]
        if it["tick"] is not None:
            events += station.tick(t + it["tick"] * MS)
    events += station.tick(t + 10_000 * MS)
    validate(events)
    assert station.kpis()["open_passages"] == 0
    places: Counter[str] = Counter()
    for e in events:
        if e.kind == "parcel":
            places.update(e.body["readings"])
        elif e.kind == "exception" and "reading" in e.body:
            places[e.body["reading"]] += 1
    assert all(places[rid] == 1 for rid in fed), (fed, places)
    assert max(places.values(), default=1) == 1  # weights at most once, nothing twice


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.dictionaries(
            st.sampled_from(["id", "device", "kind", "value", "mono_ns", "gate", "stable", "seq"]),
            st.one_of(
                st.none(),
                st.booleans(),
                st.integers(-5, 10**12),
                st.floats(),
                st.text(max_size=5),
                st.sampled_from(["t1", "sc", "barcode", "weight", "noread"]),
            ),
        ),
        max_size=30,
    )
)
def test_arbitrary_dicts_never_raise(items: list[dict[str, Any]]) -> None:
    station = _station("gate", [], 200, 150)
    events = [e for r in items for e in station.feed(r)]
    events += station.tick(10**13)
    validate(events)
