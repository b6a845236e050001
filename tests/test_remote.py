"""Issue 14: remote commands over MQTT against a real Mosquitto (MQTT 5 and 3.1.1).

The "backend" (``tests.remote_client.RemoteClient``) forgets a range of readings it received,
asks ``resend`` and must get exactly those rows back with the same ids and seqs, on their
normal topics; a purged range is answered as gone; a disallowed command is refused with its
reason; malformed and unknown requests get error responses and are counted, never a crash.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edge_agent.control import request
from simulators.mosquitto import Mosquitto
from tests.harness import Subscriber, agent_config, schema_validator
from tests.remote_client import BASE, RemoteClient
from tests.test_e2e import scanner_device

Factory = Callable[..., Any]
READINGS = 40


def _seqs_ids(backend: Subscriber, device: str) -> list[tuple[int, str]]:
    return [(r["seq"], r["id"]) for _t, r in backend.readings() if r["device"] == device]


def _start(
    tmp_path: Path, broker: Mosquitto, scanner: Factory, agent_factory: Factory,
    protocol: str = "5", extra: str = "", sections: str = "", queue_extra: str = "",
) -> tuple[Any, Any]:  # fmt: skip
    sim = scanner("scan", rate=200, seed=7)
    cfg = agent_config(
        tmp_path, broker.port, {"scan_1": scanner_device(sim)},
        extra=f'protocol = "{protocol}"\n' + extra, sections=sections, queue_extra=queue_extra,
    )  # fmt: skip
    agent = agent_factory(cfg)
    agent.start()
    return agent, sim


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_resend_returns_the_same_rows_and_says_what_is_gone(
    tmp_path: Path, broker: Mosquitto, backend: Subscriber, scanner: Factory,
    agent_factory: Factory, protocol: str,
) -> None:  # fmt: skip
    _agent, sim = _start(tmp_path, broker, scanner, agent_factory, protocol)
    sim.start(count=READINGS)
    sim.wait(20)
    assert backend.wait_for(lambda: len(_seqs_ids(backend, "scan_1")) >= READINGS, 20)
    first = dict(_seqs_ids(backend, "scan_1"))
    assert sorted(first) == list(range(1, READINGS + 1))
    hub = RemoteClient(broker.port, protocol)
    try:
        assert hub.call("ping")["result"] == {"pong": True}
        # the backend "deletes" seqs 11..20 and asks for them again, plus 35..50 (41..50 never
        # existed)
        with backend._lock:
            backend.messages.clear()
        ans = hub.call("resend", {"device": "scan_1", "seq_from": 11, "seq_to": 20})
        assert ans["ok"], ans
        assert ans["result"]["sent"] == 10 and ans["result"]["gone"] == [], ans
        assert ans["agent"] == "test-agent" and ans["command"] == "resend"
        again = _seqs_ids(backend, "scan_1")
        assert sorted(again) == [(s, first[s]) for s in range(11, 21)], again
        validators = schema_validator()
        for topic, payload, _r in backend.messages:  # on their normal topics, valid
            if "/cmd/" in topic or "/response/" in topic:
                continue
            assert topic in (f"{BASE}/batch", f"{BASE}/reading/scan_1"), topic
            validators["batch.v1.json" if topic.endswith("batch") else "reading.v1.json"].validate(
                json.loads(payload)
            )
        tail = hub.call("resend", {"device": "scan_1", "seq_from": 35, "seq_to": 50})
        assert tail["result"]["sent"] == 6, tail
        assert tail["result"]["gone"] == [{"seq_from": 41, "seq_to": 50, "reason": "unknown"}]
        for _t, body, corr in hub.responses:
            validators["response.v1.json"].validate(body)
            if protocol == "5":
                assert corr is not None and "correlation" not in body
            else:
                assert corr is None and "correlation" in body
    finally:
        hub.close()


def test_purged_range_is_answered_as_gone(
    tmp_path: Path, broker: Mosquitto, backend: Subscriber, scanner: Factory,
    agent_factory: Factory,
) -> None:  # fmt: skip
    _agent, sim = _start(tmp_path, broker, scanner, agent_factory)
    sim.start(count=20)
    sim.wait(20)
    assert backend.wait_for(lambda: len(_seqs_ids(backend, "scan_1")) >= 20, 20)
    # every sent row purged by the daemon's writer (as retain_sent_hours does, now)
    ctl = tmp_path / "ctl.sock"
    purged = request(ctl, {"cmd": "purge", "sent_before_ns": time.time_ns() + 10**9})
    assert purged["deleted"] == 20, purged
    hub = RemoteClient(broker.port)
    try:
        ans = hub.call("resend", {"device": "scan_1", "seq_from": 5, "seq_to": 25})
        assert ans["ok"] and ans["result"]["sent"] == 0, ans
        assert ans["result"]["gone"] == [
            {"seq_from": 5, "seq_to": 20, "reason": "purged"},
            {"seq_from": 21, "seq_to": 25, "reason": "unknown"},
        ]
    finally:
        hub.close()


def test_disallowed_malformed_and_unknown_requests_get_reasons_and_are_counted(
    tmp_path: Path, broker: Mosquitto, backend: Subscriber, scanner: Factory,
    agent_factory: Factory,
) -> None:  # fmt: skip
    agent, _sim = _start(
        tmp_path, broker, scanner, agent_factory, sections="[remote]\nrate_burst = 100"
    )
    hub = RemoteClient(broker.port)
    try:
        refused = hub.call("reload")
        assert refused["ok"] is False and refused["error"]["code"] == "not_allowed", refused
        assert "[remote] allow" in refused["error"]["reason"]
        dev = hub.call("device", {"device": "scan_1", "action": "zero"})
        assert dev["error"]["code"] == "not_allowed", dev
        assert hub.call("format_disk")["error"]["code"] == "unknown_command"
        bad = hub.call("resend", {"device": "scan_1", "seq_from": 9, "seq_to": 2})
        assert bad["error"] == {"code": "bad_args", "reason": "seq_to 2 is below seq_from 9"}
        big = hub.call("resend", {"device": "scan_1", "seq_from": 1, "seq_to": 10**6})
        assert big["error"]["code"] == "bad_args" and "split it" in big["error"]["reason"]
        hub.answer(hub.send("ping", payload=b"\xff{not json"))  # MQTT 5: answered via property
        assert hub.answer(hub.send("ping", payload=b"[1]"))["error"]["code"] == "malformed"
        # a response topic outside the agent's subtree: answered on {base}/response/_
        hub.send("ping", reply_to="edge/v1/T1/L1/other-agent/response/x")
        assert hub_wait(lambda: len(hub.on("_")) == 1), hub.responses
        assert hub.on("_")[0]["error"]["code"] == "malformed"
        assert hub.call("ping")["ok"]  # still answering
        st = hub.call("status")["result"]
        assert st["agent"] == "test-agent" and "scan_1" in st["devices"], st
        counts = st["remote"]["requests"]
        assert counts["not_allowed"] == 2 and counts["unknown_command"] == 1, counts
        assert counts["bad_args"] == 2 and counts["malformed"] == 3, counts
        validators = schema_validator()
        for _t, body, _c in hub.responses:
            validators["response.v1.json"].validate(body)
    finally:
        hub.close()
    assert agent.proc.poll() is None


def test_allowed_reload_runs(
    tmp_path: Path, broker: Mosquitto, backend: Subscriber, scanner: Factory,
    agent_factory: Factory,
) -> None:  # fmt: skip
    agent, _sim = _start(
        tmp_path, broker, scanner, agent_factory,
        sections='[remote]\nallow = ["ping", "status", "resend", "reload"]',
    )  # fmt: skip
    hub = RemoteClient(broker.port)
    try:
        assert hub.call("reload")["result"] == {"reload": "requested"}
        assert agent.wait_log("reloaded", 5)
    finally:
        hub.close()


def hub_wait(pred: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not pred():
        time.sleep(0.02)
    return pred()


def test_birth_and_clean_stop_and_kill_validate(
    tmp_path: Path, broker: Mosquitto, backend: Subscriber, scanner: Factory,
    agent_factory: Factory,
) -> None:  # fmt: skip
    agent, _sim = _start(tmp_path, broker, scanner, agent_factory)
    validators = schema_validator()
    assert backend.wait_for(lambda: backend.states()[-1:] == ["online"], 5)
    agent.stop()
    assert backend.wait_for(lambda: backend.states()[-1:] == ["offline-clean"], 5)
    agent.start()
    assert backend.wait_for(lambda: backend.states()[-1:] == ["online"], 5)
    agent.kill()
    assert backend.wait_for(lambda: backend.states()[-1:] == ["offline"], 10), backend.states()
    docs = [json.loads(p) for p in backend.payloads("/status")]
    for d in docs:
        validators["status.v1.json"].validate(d)
    online1, clean, online2, will = docs[-4:]
    assert [d["state"] for d in (online1, clean, online2, will)] == [
        "online", "offline-clean", "online", "offline",
    ]  # fmt: skip
    assert online1["started_at"] != online2["started_at"]
    assert will["started_at"] == online2["started_at"] and will["boot_id"] == online2["boot_id"]
    assert online1["config_digest"] == online2["config_digest"]
    assert online2["devices"][0]["id"] == "scan_1" and online2["devices"][0]["type"]
    for p in backend.payloads("/device/scan_1/state"):
        validators["device_state.v1.json"].validate(json.loads(p))
    assert backend.payloads("/device/scan_1/state")
