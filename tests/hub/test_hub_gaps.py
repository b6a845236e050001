"""Gaps: holes in a (agent, device) seq stream are opened, chased with `resend` (the command
contract of docs/backend.md §7), and closed as filled or gone; a row deleted from the database
is found again by the periodic rescan.

The agent side is first a scripted responder on a real MQTT client (to script `gone` answers),
then the real agent: a row deleted from the database is asked for and re-sent with its id.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from simulators.mosquitto import Mosquitto
from simulators.postgres import Postgres
from tests.hub.conftest import HubProc, hub_config, query, wait_until
from tests.hub.publish import connect, now_ts, publish, reading

ROOT = Path(__file__).resolve().parents[2]
BASE = "edge/v1/T1/L1/a1"


class Responder:
    """Answers `resend` like the contract says: re-publishes what it kept, reports the rest."""

    def __init__(self, port: int, kept: dict[int, dict[str, Any]], purged: set[int]) -> None:
        self.kept, self.purged = kept, purged
        self.requests: list[tuple[dict[str, Any], Any]] = []
        self.lock = threading.Lock()
        self.client = connect(port)
        self.client.on_message = self._on_message
        self.client.subscribe(f"{BASE}/cmd/#", qos=1)

    def _on_message(self, c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        req = json.loads(msg.payload)
        props = msg.properties
        with self.lock:
            self.requests.append((req, props))
        args = req["args"]
        seqs = range(args["seq_from"], args["seq_to"] + 1)
        sent = [self.kept[s] for s in seqs if s in self.kept]
        for r in sent:
            c.publish(f"{BASE}/reading/{r['device']}", json.dumps(r), qos=1)
        gone = [{"seq_from": s, "seq_to": s, "reason": "purged"} for s in seqs if s in self.purged]
        resp = {
            "schema": "edge-agent/response/v1",
            "request_id": req["id"],
            "command": "resend",
            "agent": "a1",
            "ok": True,
            "result": {"device": args["device"], "sent": len(sent), "gone": gone},
            "ts": now_ts(),
        }
        out = Properties(PacketTypes.PUBLISH)
        out.CorrelationData = getattr(props, "CorrelationData", None)
        c.publish(getattr(props, "ResponseTopic", ""), json.dumps(resp), qos=1, properties=out)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class BusyAgent(Responder):
    """A slow agent, like the real one: one resend at a time (``serve_s`` each), ``busy`` for a
    request that arrives meanwhile, and ``busy`` for the first ``refuse`` requests anyway (a
    CPU-starved agent still serving an earlier resend)."""

    def __init__(self, port: int, kept: dict[int, dict[str, Any]], refuse: int, serve_s: float):
        super().__init__(port, kept, set())
        self.refuse, self.serve_s = refuse, serve_s
        self.serving = False
        self.overlapping = 0  # requests that arrived while one was being served

    def _on_message(self, c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            busy = self.serving or self.refuse > 0
            self.overlapping += self.serving
            self.refuse -= not self.serving and self.refuse > 0
            self.serving = self.serving or not busy
        if busy:
            req, props = json.loads(msg.payload), msg.properties
            with self.lock:
                self.requests.append((req, props))
            resp = {
                "schema": "edge-agent/response/v1", "request_id": req["id"], "command": "resend",
                "agent": "a1", "ok": False, "ts": now_ts(),
                "error": {"code": "busy", "reason": "a resend is running: one at a time"},
            }  # fmt: skip
            out = Properties(PacketTypes.PUBLISH)
            out.CorrelationData = getattr(props, "CorrelationData", None)
            c.publish(getattr(props, "ResponseTopic", ""), json.dumps(resp), qos=1, properties=out)
            return

        def serve() -> None:
            time.sleep(self.serve_s)
            super(BusyAgent, self)._on_message(c, _u, msg)
            with self.lock:
                self.serving = False

        threading.Thread(target=serve, daemon=True).start()


def gaps(dsn: str) -> list[tuple[Any, ...]]:
    return query(dsn, "SELECT seq_from, seq_to, state, reason, missing FROM gaps ORDER BY seq_from")


def hub_cli(cfg: Path, *args: str) -> Any:
    r = subprocess.run(
        [sys.executable, "-m", "edge_agent", "hub", *args, "-c", str(cfg), "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    return json.loads(r.stdout)


def test_gap_resend_filled_gone_and_deleted_row(
    tmp_path: Path,
    broker: Mosquitto,
    postgres: Postgres,
    hub_factory: Callable[[Path], HubProc],
) -> None:
    extra = "gap_grace_s = 0.5\nresend_retry_s = 30\nrescan_s = 1.5"
    cfg = hub_config(tmp_path, "h1", [broker.port], postgres.dsn, extra)
    hub = hub_factory(cfg)
    hub.start()
    all_rs = {s: reading("a1", "scan_1", s) for s in range(1, 51)}
    held, purged = {20, 21, 22}, {30}
    kept = {s: r for s, r in all_rs.items() if s not in purged}
    responder = Responder(broker.port, kept, purged)
    try:
        publish(
            broker.port,
            (
                (f"{BASE}/reading/scan_1", r, False)
                for s, r in all_rs.items()
                if s not in held | purged
            ),
        )
        dsn = postgres.dsn
        want = [(20, 22, "filled", None), (30, 30, "gone", "purged")]

        def done() -> bool:
            return [g[:4] for g in gaps(dsn)] == want

        assert wait_until(done, 20), gaps(dsn)
        reqs = [(r["args"], p) for r, p in responder.requests]
        assert {(a["seq_from"], a["seq_to"]) for a, _ in reqs} == {(20, 22), (30, 30)}
        for (a, p), (req, _) in zip(reqs, responder.requests, strict=True):
            assert a["device"] == "scan_1"
            assert req["schema"] == "edge-agent/command/v1"
            assert p.ResponseTopic == f"{BASE}/response/h1"
            assert p.CorrelationData == req["id"].encode()
        assert hub_cli(cfg, "gaps") == []
        assert len(hub_cli(cfg, "gaps", "--all")) == 2
        n = len(query(dsn, "SELECT id FROM readings"))
        assert n == 49
        # A row deleted from the database: the rescan finds the hole, resend fills it.
        query(dsn, "DELETE FROM readings WHERE agent = 'a1' AND seq = 10")
        assert wait_until(lambda: any(g[0] == 10 for g in gaps(dsn)), 10), gaps(dsn)
        assert wait_until(lambda: (10, 10, "filled", None) in [g[:4] for g in gaps(dsn)], 10)
        ids = {str(r[0]) for r in query(dsn, "SELECT id FROM readings")}
        assert ids == {r["id"] for s, r in all_rs.items() if s not in purged}
    finally:
        responder.close()


def test_real_agent_answers_resend(
    tmp_path: Path,
    broker: Mosquitto,
    postgres: Postgres,
    agent_factory: Callable[..., Any],
    hub_factory: Callable[[Path], HubProc],
    scanner: Callable[..., Any],
) -> None:
    """The real agent: a reading deleted from the database comes back with its id and seq."""
    from tests.harness import agent_config
    from tests.test_e2e import scanner_device

    sim = scanner("scan", framing="terminator", terminator="CR", rate=100, seed=5)
    agent = agent_factory(agent_config(tmp_path, broker.port, {"scan_1": scanner_device(sim)}))
    agent.start()
    c = connect(broker.port)
    answers: list[bytes] = []
    c.on_message = lambda _c, _u, m: answers.append(bytes(m.payload))
    c.subscribe("edge/v1/T1/L1/test-agent/response/#", qos=1)
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = "edge/v1/T1/L1/test-agent/response/probe"
    props.CorrelationData = b"1"
    for attempt in range(10):  # until the agent is connected and subscribed to its cmd/#
        c.publish(
            "edge/v1/T1/L1/test-agent/cmd/ping",
            json.dumps({"schema": "edge-agent/command/v1", "id": f"p{attempt}", "args": {}}),
            qos=1,
            properties=props,
        )
        if wait_until(lambda: bool(answers), 1):
            break
    c.disconnect()
    assert answers, "the agent never answered ping"
    extra = "gap_grace_s = 0.5\nrescan_s = 1.5"
    hub = hub_factory(hub_config(tmp_path, "h1", [broker.port], postgres.dsn, extra))
    hub.start()
    sim.start(count=100)
    sim.wait(20)
    dsn = postgres.dsn
    assert wait_until(lambda: query(dsn, "SELECT count(*) FROM readings")[0][0] == 100, 20)
    (rid,) = query(dsn, "DELETE FROM readings WHERE seq = 40 RETURNING id")[0]
    assert wait_until(lambda: (40, 40, "filled", None) in [g[:4] for g in gaps(dsn)], 20)
    assert query(dsn, "SELECT id FROM readings WHERE seq = 40")[0][0] == rid


def test_a_busy_agent_is_asked_one_resend_at_a_time_and_busy_costs_no_try(
    tmp_path: Path,
    broker: Mosquitto,
    postgres: Postgres,
    hub_factory: Callable[[Path], HubProc],
) -> None:
    """Found at fleet scale (docs/hub.md, station truth): the hub sent every gap of an agent its
    ``resend`` at once, the agent (one resend at a time) refused the rest ``busy``, each refusal
    counted as a try, and after ``resend_max_tries`` those gaps stayed open for good although
    the agent had the rows. Now: one request per agent at a time, and ``busy`` is no try."""
    extra = "gap_grace_s = 0.3\nresend_retry_s = 0.5\nresend_max_tries = 2"
    cfg = hub_config(tmp_path, "h1", [broker.port], postgres.dsn, extra)
    hub = hub_factory(cfg)
    hub.start()
    all_rs = {s: reading("a1", "scan_1", s) for s in range(1, 41)}
    held = {10, 20, 30}  # three gaps of one agent
    agent = BusyAgent(broker.port, all_rs, refuse=3, serve_s=0.4)
    try:
        publish(
            broker.port,
            ((f"{BASE}/reading/scan_1", r, False) for s, r in all_rs.items() if s not in held),
        )
        dsn = postgres.dsn
        want = [(s, s, "filled") for s in sorted(held)]
        assert wait_until(lambda: [g[:3] for g in gaps(dsn)] == want, 30), gaps(dsn)
        assert agent.overlapping == 0, f"{agent.overlapping} requests while one was served"
        assert len(query(dsn, "SELECT id FROM readings")) == 40
    finally:
        agent.close()
