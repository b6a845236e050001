"""The stations thread: quiet while nothing is open, on time when a passage is."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from edge_agent.outbox import OutEvent
from edge_agent.station import Station, StationConfig
from edge_agent.station_runner import StationRunner
from edge_agent.waybill import WaybillTable


def _switches(thread: threading.Thread) -> int:
    status = Path(f"/proc/self/task/{thread.native_id}/status").read_text()
    return sum(int(line.split()[1]) for line in status.splitlines() if "ctxt_switches" in line)


def test_idle_stations_sleep_and_an_open_passage_closes_on_time() -> None:
    cfg: dict[str, Any] = {
        "devices": ["tunnel_1", "scale"],
        "correlation": "window",
        "trigger_devices": ["tunnel_1"],
        "window_ms": 200,
        "close_delay_ms": 0,
        "weight_devices": ["scale"],
        "require_weight": False,
        "dedup_window_ms": 2000,
        "kpi_interval_s": 3600,
    }
    events: list[OutEvent] = []
    got = threading.Event()

    def submit(ev: OutEvent) -> None:
        events.append(ev)
        got.set()

    station = Station("st1", StationConfig.model_validate(cfg), WaybillTable())
    runner = StationRunner({"st1": station}, submit)
    runner.start()
    try:
        time.sleep(0.3)
        before = _switches(runner)
        time.sleep(1.5)
        idle = _switches(runner) - before
        assert idle <= 2, f"{idle} wake-ups in 1.5 s with nothing open (a 0.02 s tick: ~75)"
        fed = time.monotonic()
        reading = {"id": "r1", "device": "tunnel_1", "seq": 1, "kind": "barcode",
                   "value": "SF1234567890123", "mono_ns": time.monotonic_ns()}  # fmt: skip
        runner.feed(reading)
        assert got.wait(2.0), "the passage never closed"
        took = time.monotonic() - fed
        assert 0.15 <= took <= 0.6, f"closed after {took:.3f} s (window 0.2 s)"
        assert [e.kind for e in events] == ["parcel"]
        assert runner.live.healthy(0.5)
    finally:
        t0 = time.monotonic()
        runner.stop()
        assert not runner.is_alive() and time.monotonic() - t0 < 0.5
