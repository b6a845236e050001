"""Stations through the real daemon: ptys -> agent -> broker; exceptions ahead of backlog."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from simulators.mosquitto import Mosquitto
from simulators.pty_port import PtyPort
from simulators.serial_line_scanner import sscc
from tests.faults.test_backlog import prefill
from tests.harness import Subscriber, agent_config, schema_validator

Factory = Callable[..., Any]

STATION = """
[stations.st1]
devices = ["tun_1", "tun_2"]
correlation = "window"
trigger_devices = ["tun_1", "tun_2"]
window_ms = 150
close_delay_ms = 100
dedup_window_ms = 2000
require_weight = false
kpi_interval_s = 1
kpi_window_s = 60
"""


def _ports(tmp_path: Path) -> tuple[PtyPort, PtyPort, dict[str, dict[str, object]]]:
    p1, p2 = PtyPort(tmp_path / "tun1"), PtyPort(tmp_path / "tun2")
    p1.plug()
    p2.plug()
    dev = {"type": "serial_line_scanner", "framing": "stx_etx"}
    return p1, p2, {"tun_1": {**dev, "port": str(p1.link)}, "tun_2": {**dev, "port": str(p2.link)}}


def _events(backend: Subscriber, kind: str) -> list[dict[str, Any]]:
    return [json.loads(p) for t, p, _ in list(backend.messages) if f"/{kind}/" in t]


def _parcels(p1: PtyPort, p2: PtyPort, codes: list[str | None]) -> None:
    """Each parcel read by both tunnel heads 10 ms apart; None is a no-read on both."""
    for code in codes:
        frame = b"\x02" + (code or "NoRead").encode() + b"\x03"
        p1.write(frame)
        time.sleep(0.01)
        p2.write(frame)
        time.sleep(0.35)  # parcel gap longer than the window


def test_parcels_and_exceptions_from_two_tunnel_heads(
    tmp_path: Path, broker: Mosquitto, backend: Subscriber, agent_factory: Factory
) -> None:
    p1, p2, devices = _ports(tmp_path)
    agent = agent_factory(agent_config(tmp_path, broker.port, devices, sections=STATION))
    agent.start()
    good = ["SF1000000000001", "YT1000000000002", f"00{sscc('69012340000000001')}"]
    _parcels(p1, p2, [good[0], None, good[1], "NOTAWAYBILL", good[2]])
    assert backend.wait_for(lambda: len(_events(backend, "parcel")) >= 5, 10), backend.messages
    parcels = _events(backend, "parcel")
    exceptions = _events(backend, "exception")
    v = schema_validator()
    for p in parcels:
        v["parcel.v1.json"].validate(p)
        assert p["station"] == "st1" and sorted(p["devices"]) == ["tun_1", "tun_2"]
    for e in exceptions:
        v["exception.v1.json"].validate(e)
    assert [p["waybill"] for p in parcels if p.get("waybill")] == good
    kinds = sorted(e["exception"] for e in exceptions)
    assert kinds == ["invalid_code", "noread"], exceptions
    assert [p["seq"] for p in parcels] == list(range(1, len(parcels) + 1))
    assert backend.wait_for(lambda: len(_events(backend, "kpi")) >= 1, 5)
    kpi = _events(backend, "kpi")[-1]
    v["kpi.v1.json"].validate(kpi)
    agent.stop()
    p1.close()
    p2.close()


def test_exceptions_reach_the_broker_before_the_backlog(
    tmp_path: Path, agent_factory: Factory
) -> None:
    broker = Mosquitto(tmp_path / "broker")  # down: the backlog and the exception wait together
    prefill(tmp_path / "state" / "queue.db", 40_000)
    p1, p2, devices = _ports(tmp_path)
    agent = agent_factory(agent_config(tmp_path, broker.port, devices, sections=STATION))
    agent.start()
    _parcels(p1, p2, [None])
    time.sleep(1.0)
    broker.start()
    backend = Subscriber(broker.port)
    try:
        assert backend.wait_for(lambda: len(backend.readings()) >= 40_000, 60)
        topics = [t for t, _, _ in backend.messages]
        first_exception = next(i for i, t in enumerate(topics) if "/exception/" in t)
        last_backlog = max(i for i, t in enumerate(topics) if t.endswith("/batch"))
        assert first_exception < last_backlog
        first_data = min(
            i for i, t in enumerate(topics) if t.endswith("/batch") or "/reading/" in t
        )
        # only side messages (status, device states, the connect-failure alarm) come first
        assert first_exception < first_data, topics[:8]
    finally:
        agent.stop()
        backend.close()
        broker.stop()
        p1.close()
        p2.close()
