"""The publisher against real brokers: protocols, rejections, TLS, failover, LWT, backlog."""

from __future__ import annotations

import json
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from simulators.mosquitto import Mosquitto, free_port
from tests.harness import Subscriber, agent_config, backend_session_before, queue_rows
from tests.test_e2e import assert_oracle, emitted, received, scanner_device
from tests.tls import make_ca, make_server_cert

Factory = Callable[..., Any]


def _wait_pending_zero(db: Path, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(r["sent_ns"] is not None for r in queue_rows(db)):
            return True
        time.sleep(0.1)
    return False


def test_mqtt_311_selectable(
    tmp_path: Path, broker: Mosquitto, backend: Subscriber, scanner: Factory, agent_factory: Factory
) -> None:
    sim = scanner("scan", rate=100, seed=21)
    cfg = agent_config(tmp_path, broker.port, {"s1": scanner_device(sim)}, 'protocol = "3.1.1"')
    agent = agent_factory(cfg)
    agent.start()
    sim.start(count=100)
    sim.wait(10)
    assert backend.wait_for(lambda: len(received(backend, "s1")) >= 100, 10)
    assert [(r["kind"], r["value"]) for r in received(backend, "s1")] == emitted(sim)
    agent.stop()
    assert_oracle(backend, tmp_path / "state" / "queue.db")


@pytest.fixture
def tls_broker(tmp_path: Path) -> Any:
    bdir = tmp_path / "tlsbroker"
    bdir.mkdir()
    ca, ca_key, ca_cert = make_ca(bdir, "line-ca")
    cert, key = make_server_cert(bdir, ca_key, ca_cert, "127.0.0.1")
    broker = Mosquitto(bdir, extra=f"cafile {ca}\ncertfile {cert}\nkeyfile {key}\n")
    broker.start()
    yield broker, ca
    broker.stop()


def test_tls_with_private_ca(
    tmp_path: Path, tls_broker: Any, scanner: Factory, agent_factory: Factory
) -> None:
    broker, ca = tls_broker
    backend = Subscriber(broker.port, ca_file=ca)
    sim = scanner("scan", rate=100, seed=23)
    tls = f'[mqtt.tls]\nca_file = "{ca}"'
    agent = agent_factory(agent_config(tmp_path, broker.port, {"s1": scanner_device(sim)}, tls))
    agent.start()
    sim.start(count=50)
    sim.wait(5)
    assert backend.wait_for(lambda: len(received(backend, "s1")) >= 50, 10)
    agent.stop()
    backend.close()


def test_tls_wrong_ca_fails_closed_but_keeps_reading(
    tmp_path: Path, tls_broker: Any, scanner: Factory, agent_factory: Factory
) -> None:
    broker, _ca = tls_broker
    other, _, _ = make_ca(tmp_path, "other-ca")
    sim = scanner("scan", rate=100, seed=24)
    tls = f'[mqtt.tls]\nca_file = "{other}"'
    agent = agent_factory(agent_config(tmp_path, broker.port, {"s1": scanner_device(sim)}, tls))
    agent.start()
    sim.start(count=30)
    sim.wait(5)
    time.sleep(1.5)
    rows = queue_rows(tmp_path / "state" / "queue.db")
    assert len(rows) == 30 and all(r["sent_ns"] is None for r in rows)
    assert agent.proc is not None and agent.proc.poll() is None
    assert any(e["event"] == "mqtt_connect_failed" for e in agent.events())
    assert not any(e["event"] == "mqtt_connected" for e in agent.events())
    agent.stop()


def test_failover_to_second_broker(
    tmp_path: Path, broker: Mosquitto, backend: Subscriber, scanner: Factory, agent_factory: Factory
) -> None:
    dead = free_port()
    sim = scanner("scan", rate=100, seed=25)
    cfg = agent_config(tmp_path, broker.port, {"s1": scanner_device(sim)})
    text = cfg.read_text().replace(
        f'brokers = [{{ host = "127.0.0.1", port = {broker.port} }}]',
        f'brokers = [{{ host = "127.0.0.1", port = {dead} }}, '
        f'{{ host = "127.0.0.1", port = {broker.port} }}]\nfailover_after = 1',
    )
    cfg.write_text(text)
    agent = agent_factory(cfg)
    agent.start()
    sim.start(count=40)
    sim.wait(5)
    assert backend.wait_for(lambda: len(received(backend, "s1")) >= 40, 15)
    connected = [e for e in agent.events() if e["event"] == "mqtt_connected"]
    assert connected and connected[0]["port"] == broker.port
    agent.stop()


def test_last_will_offline_after_kill_9(
    tmp_path: Path, broker: Mosquitto, backend: Subscriber, agent_factory: Factory
) -> None:
    cfg = agent_config(tmp_path, broker.port, {})
    agent = agent_factory(cfg)
    agent.start()
    assert backend.wait_for(lambda: backend.states()[-1:] == ["online"], 5)
    agent.kill(signal.SIGKILL)
    assert backend.wait_for(lambda: backend.states()[-1:] == ["offline"], 10)


def test_queue_bound_refuses_new_readings_counts_and_alarms(
    tmp_path: Path, scanner: Factory, agent_factory: Factory
) -> None:
    broker = Mosquitto(tmp_path / "broker")  # configured, not started: the broker is down
    backend_session_before(broker)  # no message lost to the subscriber's late start
    sim = scanner("scan", rate=2000, seed=27)
    cfg = agent_config(
        tmp_path, broker.port, {"s1": scanner_device(sim)}, queue_extra="max_bytes = 1048576"
    )
    agent = agent_factory(cfg)
    agent.start()
    sim.start(count=4000)
    sim.wait(20)
    time.sleep(1)
    db = tmp_path / "state" / "queue.db"
    rows = queue_rows(db)
    stored = sum(len(json.dumps(r["payload"], separators=(",", ":"))) for r in rows)
    assert stored <= 1048576
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    dropped = dict(con.execute("SELECT name, value FROM counters").fetchall())["dropped"]
    con.close()
    assert dropped > 0 and len(rows) + dropped == 4000
    seqs = sorted(r["seq"] for r in rows)
    assert seqs == list(range(1, len(rows) + 1))  # refusals come after the queue filled
    assert any(e["event"] == "queue_full_reading_dropped" for e in agent.events())
    broker.start()
    backend = Subscriber(broker.port)
    try:

        def alarms() -> list[dict[str, Any]]:
            return [json.loads(p) for p in backend.payloads("/alarm")]

        # the broker was down from the start: an mqtt_connect_failed alarm comes too
        assert backend.wait_for(lambda: any(a["alarm"] == "queue_full" for a in alarms()), 15)
        alarm = next(a for a in alarms() if a["alarm"] == "queue_full")
        assert alarm["dropped_total"] > 0
        assert backend.wait_for(lambda: len(received(backend, "s1")) >= len(rows), 20)
    finally:
        agent.stop()
        backend.close()
        broker.stop()


def test_network_loop_and_held_messages_are_tracked_without_paho_internals(
    tmp_path: Path, broker: Mosquitto, capsys: pytest.CaptureFixture[str]
) -> None:
    """The watchdog's view of paho's network loop is the thread that runs paho's connection
    attempts (known from inside it, not from paho's private ``_thread``): when the loop dies
    (an exception out of a callback, P8), it says so, and the death is one JSON-able log line
    (``thread_died``); the messages paho holds are counted by the publisher, not read from
    ``_out_messages``."""
    import threading

    from edge_agent.config import MqttConfig
    from edge_agent.logs import log_thread_deaths
    from edge_agent.outbox import Outbox
    from edge_agent.publisher import Publisher
    from edge_agent.reading import Identity
    from edge_agent.topics import Topics
    from edge_agent.writer import Writer

    hook = threading.excepthook
    log_thread_deaths()
    db = tmp_path / "q.db"
    outbox = Outbox(db, Identity("a1", "S1", "L1", "b"), 1 << 20, 3600)
    writer = Writer(outbox, lambda _acc: None, lambda _n, _d: None)
    cfg = MqttConfig.model_validate({"brokers": [{"host": "127.0.0.1", "port": broker.port}]})
    pub = Publisher(cfg, Topics("edge", "S1", "L1", "a1"), "edge-agent-a1", None, db, writer)
    writer.start()
    pub.start()
    try:
        deadline = time.monotonic() + 10
        while not (pub.connected and pub.status()["paho_messages"] == 0):
            assert time.monotonic() < deadline, pub.status()
            time.sleep(0.05)
        assert pub.network_thread_alive()
        # the socket paho opened: no Nagle delay (a PUBLISH behind an unacknowledged PUBACK
        # waited 40 ms for the broker's delayed ACK) and a user timeout of keepalive/2 (P12)
        import socket

        sock = pub.client.socket()
        assert isinstance(sock, socket.socket)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == cfg.keepalive * 500
        assert broker.proc is not None
        broker.proc.send_signal(signal.SIGSTOP)  # PUBACKs stop coming: what paho holds counts
        for i in range(3):
            pub.alarm("test", {"i": i})
        time.sleep(0.5)
        assert pub.status()["paho_messages"] == 3
        broker.proc.send_signal(signal.SIGCONT)
        while pub.status()["paho_messages"]:
            assert time.monotonic() < deadline + 10, pub.status()
            time.sleep(0.05)

        def boom(*_a: object) -> None:
            raise RuntimeError("a bug in a callback")

        pub.client.on_publish = boom  # the next PUBACK raises inside paho's loop
        pub.alarm("test", {"i": 99})
        while pub.network_thread_alive():
            assert time.monotonic() < deadline + 20, "the dead loop went unnoticed"
            time.sleep(0.05)
        seen = capsys.readouterr()
        assert "thread_died" in seen.out + seen.err  # logged, not a bare traceback
        assert "a bug in a callback" in seen.out + seen.err
    finally:
        threading.excepthook = hook
        pub.stop(2.0)
        writer.stop(1.0)
        outbox.close()
