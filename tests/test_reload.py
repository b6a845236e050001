"""SIGHUP: devices added/removed/changed in place; queued readings untouched; bad config refused."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from simulators.mosquitto import Mosquitto
from tests.harness import Subscriber, agent_config, backend_session_before, queue_rows
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
        assert [(r["kind"], r["value"]) for r in received(backend, "scan_a")] == emitted(a)
        assert [(r["kind"], r["value"]) for r in received(backend, "scan_b")] == emitted(b)
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
