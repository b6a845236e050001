"""SIGHUP: devices added/removed/changed in place; queued readings untouched; bad config refused."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_agent.status import Rates
from simulators.mosquitto import Mosquitto, free_port
from tests.harness import ROOT, Subscriber, agent_config, backend_session_before, queue_rows
from tests.test_e2e import assert_oracle, emitted, received, scanner_device

Factory = Callable[..., Any]


def test_sighup_adds_and_removes_devices_without_losing_queued_readings(
    tmp_path: Path, scanner: Factory, agent_factory: Factory
) -> None:
    broker = Mosquitto(tmp_path / "broker")  # down at first: readings pile up in the queue
    backend_session_before(broker)  # no message lost to the subscriber's late start
    a = scanner("a", rate=50, seed=41, scanner_no=1)
    b = scanner("b", rate=50, seed=42, scanner_no=2)
    cfg = agent_config(tmp_path, broker.port, {"scan_a": scanner_device(a)})
    agent = agent_factory(cfg)
    agent.start()
    a.start(count=100)
    a.wait(10)
    time.sleep(0.5)
    queued = len(queue_rows(tmp_path / "state" / "queue.db"))
    assert queued == 100
    agent_config(tmp_path, broker.port, {"scan_b": scanner_device(b)})  # a removed, b added
    assert agent.proc is not None
    agent.proc.send_signal(signal.SIGHUP)
    assert agent.wait_log("reloaded", 5), agent.log_text()
    b.start(count=60)
    b.wait(10)
    broker.start()
    backend = Subscriber(broker.port)
    try:
        assert backend.wait_for(lambda: len(received(backend, "scan_b")) >= 60, 15)
        assert backend.wait_for(lambda: len(received(backend, "scan_a")) >= 100, 15)
        # live rows (committed in the last LIVE_S before the connect) go ahead of the backlog,
        # so arrival order is not seq order: compare in seq order, as a backend must
        for dev, sim in (("scan_a", a), ("scan_b", b)):
            once = {r["id"]: r for r in received(backend, dev)}.values()  # at least once
            got = sorted(once, key=lambda r: r["seq"])
            assert [(r["kind"], r["value"]) for r in got] == emitted(sim)
        states = [e for e in agent.events() if e["event"] == "device_state"]
        assert any(e["device"] == "scan_a" and e["state"] == "stopped" for e in states)
        # a config that does not validate is refused; the daemon keeps running as it was
        cfg.write_text(cfg.read_text().replace('framing = "terminator"', 'framing = "slip"'))
        agent.proc.send_signal(signal.SIGHUP)
        assert agent.wait_log("reload_rejected", 5)
        assert agent.proc.poll() is None
        agent.stop()
        assert_oracle(backend, tmp_path / "state" / "queue.db")
    finally:
        agent.stop()
        backend.close()
        broker.stop()


def _status(cfg: Path) -> dict[str, Any]:
    res = subprocess.run(
        [sys.executable, "-m", "edge_agent", "status", "-c", str(cfg), "--json"],
        capture_output=True, text=True, cwd=ROOT, timeout=30, check=True,
    )  # fmt: skip
    return dict(json.loads(res.stdout))


def test_sighup_keeps_unchanged_devices_and_their_order_and_starts_changed_ones_fresh(
    tmp_path: Path, broker: Mosquitto, scanner: Factory, agent_factory: Factory
) -> None:
    a = scanner("a", rate=20, seed=51, scanner_no=1)
    b = scanner("b", rate=20, seed=52, scanner_no=2)
    devices = {"scan_a": scanner_device(a), "scan_b": scanner_device(b)}
    cfg = agent_config(tmp_path, broker.port, devices)
    agent = agent_factory(cfg)
    agent.start()
    a.start(count=0)
    b.start(count=0)
    time.sleep(5.8)  # two rate samples (one every 5 s)
    before = _status(cfg)["devices"]
    assert list(before) == ["scan_a", "scan_b"]
    assert before["scan_a"]["readings_per_min"] > 0 and before["scan_b"]["readings_per_min"] > 0
    # scan_a (listed first) changes, scan_b does not
    agent_config(tmp_path, broker.port, {**devices, "scan_a": scanner_device(a, exclusive=False)})
    assert agent.proc is not None
    agent.proc.send_signal(signal.SIGHUP)
    assert agent.wait_log("reloaded", 5), agent.log_text()
    after = _status(cfg)["devices"]
    assert list(after) == ["scan_a", "scan_b"], after  # the file's order, not restart order
    assert after["scan_b"]["readings"] >= before["scan_b"]["readings"] > 0
    assert after["scan_b"]["last_value"] is not None and after["scan_b"]["readings_per_min"] > 0
    # scan_a starts fresh: its counters from 0, no rate until its new worker has two samples
    assert after["scan_a"]["readings"] < before["scan_a"]["readings"], (before, after)
    assert (after["scan_a"]["readings_per_min"], after["scan_a"]["rejects_per_min"]) == (0.0, 0.0)
    deadline = time.monotonic() + 12
    rates = []
    while time.monotonic() < deadline:
        dev = _status(cfg)["devices"]["scan_a"]
        rates.append((dev["readings_per_min"], dev["rejects_per_min"]))
        if dev["readings_per_min"] > 0:
            break
        time.sleep(0.5)
    assert all(r >= 0 and j >= 0 for r, j in rates), rates
    assert rates[-1][0] > 0, rates
    a.stop()
    b.stop()


def test_rates_never_negative_when_a_counter_restarts() -> None:
    # the oldest sample in the 1-minute window holds a worker's count from before a restart
    rates = Rates()
    rates.samples.extend([(0.0, {"a": (500, 3)}), (30.0, {"a": (560, 3)}), (60.0, {"a": (7, 0)})])
    assert rates.per_minute("a") == (0.0, 0.0)
    rates.samples.append((90.0, {"a": (37, 1)}))  # the first sample of a's new worker counts
    assert rates.per_minute("a") == (0.0, 0.0)
    assert rates.per_minute("missing") == (0.0, 0.0)
    rates.forget("a")  # what a reload does for a restarted device
    rates.samples.extend([(120.0, {"a": (37, 1)}), (150.0, {"a": (97, 1)})])
    assert rates.per_minute("a") == (120.0, 0.0)  # 60 readings in 30 s, counted from restart


def test_sighup_removing_a_listen_device_frees_its_port(
    tmp_path: Path, broker: Mosquitto, agent_factory: Factory
) -> None:
    """A ``listen://`` port is held while its device is configured (reconnecting scanners wait
    in the backlog); once a reload removes the device, the port is free for another program."""
    port = free_port()
    dev = {"type": "sick_clv", "port": f"listen://127.0.0.1:{port}"}
    cfg = agent_config(tmp_path, broker.port, {"clv_1": dev})
    agent = agent_factory(cfg)
    agent.start()
    assert agent.proc is not None

    def bindable() -> bool:
        try:
            socket.create_server(("127.0.0.1", port)).close()
        except OSError:
            return False
        return True

    deadline = time.monotonic() + 10
    while bindable():  # the device thread binds it on its first open
        assert time.monotonic() < deadline, "the agent never bound its listen port"
        time.sleep(0.1)
    agent_config(tmp_path, broker.port, {})  # the device removed
    agent.proc.send_signal(signal.SIGHUP)
    assert agent.wait_log("reloaded", 5), agent.log_text()
    assert bindable(), f"port {port} still bound after its device was removed"
    assert agent.proc.poll() is None
