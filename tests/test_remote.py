"""Issue 14: remote commands over MQTT against a real Mosquitto (MQTT 5 and 3.1.1).

The "backend" (``tests.remote_client.RemoteClient``) forgets a range of readings it received,
asks ``resend`` and must get exactly those rows back with the same ids and seqs, on their
normal topics; a purged range is answered as gone; a disallowed command is refused with its
reason; malformed and unknown requests get error responses and are counted, never a crash.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edge_agent.control import request
from simulators.mosquitto import Mosquitto
from tests.harness import ROOT, Subscriber, agent_config, log_time, schema_validator
from tests.remote_client import BASE, RemoteClient
from tests.test_e2e import scanner_device

Factory = Callable[..., Any]
READINGS = 40
#: A backend gone wrong: ``status`` requests at argv[2] per second, QoS 1, until killed.
FLOOD = """
import json, os, sys, time
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="flood", protocol=mqtt.MQTTv5)
c.connect("127.0.0.1", int(sys.argv[1]))
c.loop_start()
body = json.dumps({"schema": "edge-agent/command/v1", "id": "f"}).encode()
while True:
    for _ in range(int(sys.argv[2]) // 20):
        c.publish(sys.argv[3] + "/cmd/" + os.environ.get("FLOOD_CMD", "status"), body, qos=1)
    time.sleep(0.05)
"""
#: Requests per second of the command flood (the default limit is 5/s).
FLOOD_PER_S = 500
#: Live readings timed per phase of the flood test, over 5 s: a p99 of 250 is their 3rd worst
#: (of 100 it would be the single worst but one, mostly this machine's noise).
LIVE = 250
#: Run-to-run noise of a 250-reading p99 on a shared 2-core machine (s).
NOISE_S = 0.010


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
    assert backend.wait_for(  # every PUBACK's sent mark committed
        lambda: request(ctl, {"cmd": "status"})["status"]["queue"]["pending"] == 0, 5
    )
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
        # at once: the request wakes the main loop (it used to wait for the loop's next timer,
        # up to the 5 s rate sample)
        assert agent.wait_log("reloaded", 2), agent.log_text()
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


def _latencies(backend: Subscriber, device: str, since: float) -> list[float]:
    """Arrival minus read time (s) of the first copy of each reading read after ``since``."""
    first = backend.first_arrival()
    out = []
    for _t, r in backend.readings():
        t = log_time({"timestamp": r["ts"]})
        if r["device"] == device and t >= since and r["id"] in first:
            out.append(first.pop(r["id"]) - t)
    return sorted(out)


def _p99(xs: list[float]) -> float:
    return xs[min(len(xs) - 1, int(len(xs) * 0.99))]


def _live_under_flood(broker: Mosquitto, backend: Subscriber, sim: Any, base: str) -> list[float]:
    """Latencies of :data:`LIVE` live readings (5 s) while :data:`FLOOD` publishes to
    ``{base}/cmd/status``, from another process (its publishing must not steal the GIL from the
    test's subscriber, which would inflate the measured arrival times)."""
    args = [sys.executable, "-c", FLOOD, str(broker.port), str(FLOOD_PER_S), base]
    flooder = subprocess.Popen(args, cwd=ROOT)
    t0 = time.time()
    try:
        time.sleep(0.2)
        sim.start(count=LIVE)
        sim.wait(20)
        time.sleep(0.5)
        assert backend.wait_for(lambda: len(_latencies(backend, "live_1", t0)) >= LIVE, 30)
    finally:
        flooder.kill()
        flooder.wait()
    if os.environ.get("FLOOD_DEBUG"):  # FLOOD_DEBUG=0.008: print readings later than 8 ms
        late = float(os.environ["FLOOD_DEBUG"])
        first = backend.first_arrival()
        for _t, r in backend.readings():
            t = log_time({"timestamp": r["ts"]})
            if r["device"] == "live_1" and t >= t0 and first.get(r["id"], t) - t > late:
                print(f"  {base[-12:]} read +{t - t0:.3f}s late {first[r['id']] - t:.3f}s")
    return _latencies(backend, "live_1", t0)


def test_command_flood_is_paused_and_live_readings_keep_flowing(
    tmp_path: Path, broker: Mosquitto, backend: Subscriber, scanner: Factory,
    agent_factory: Factory,
) -> None:  # fmt: skip
    agent, _sim = _start(
        tmp_path, broker, scanner, agent_factory, sections="[remote]\nflood_pause_s = 2"
    )
    sim = scanner("live", rate=LIVE // 5, seed=9)
    cfg = agent.config.read_text().replace("[devices.scan_1]", "[devices.live_1]\n"
        + "\n".join(f"{k} = {json.dumps(v)}" for k, v in scanner_device(sim).items())
        + "\n[devices.scan_1]")  # fmt: skip
    agent.stop()
    agent.config.write_text(cfg)
    agent.start()
    # "normal" is live traffic on a busy broker: the same flood, aimed at another agent's
    # commands (what the broker and this machine pay for it, the agent not involved); then
    # aimed at this agent. The difference is what the flood costs the agent's live readings.
    # live readings are timed by a subscriber of the reading topics only: the `backend`
    # fixture (edge/#) also receives the flood, and its growing message list would slow the
    # test's own thread that stamps arrivals
    # A pair (normal, flooded) spoiled by a noisy neighbour on this shared machine is measured
    # once more, after a calm that resets the agent's pause doubling; a real cost fails both.
    live = Subscriber(broker.port, topic=f"{BASE}/reading/+", client_id="live")
    t1 = time.time()
    try:
        assert live.subscribed.wait(5)
        live.client.subscribe(f"{BASE}/batch", qos=1)
        for attempt in (1, 2):
            normal = _live_under_flood(broker, live, sim, "edge/v1/T1/L1/other-agent")
            under = _live_under_flood(broker, live, sim, BASE)
            p_normal, p_under = _p99(normal), _p99(under)
            print(f"live p99 {p_normal * 1000:.1f} ms flood elsewhere, "
                  f"{p_under * 1000:.1f} ms flooded (pair {attempt})")  # fmt: skip
            if p_under <= max(2 * p_normal, p_normal + NOISE_S) or attempt == 2:
                break
            time.sleep(10)  # the last pause (4 s) ends, then as long again: doubling resets
    finally:
        live.close()
    ctl, seen = tmp_path / "ctl.sock", -1
    for _ in range(100):  # until the broker delivered the flood's tail
        st = request(ctl, {"cmd": "status"})["status"]["remote"]
        total = sum(st["requests"].values()) + st["inbox_dropped"]
        if total == seen:
            break
        seen = total
        time.sleep(0.5)
    print(f"remote status after the flood: {st}")
    # within the normal p99, give or take this shared machine's noise: a flood that cost the
    # live readings anything real (the 40 ms Nagle stall a command burst caused before the
    # agent set TCP_NODELAY, or 50 requests handled per resume before the token-bucket trip)
    # fails this
    assert p_under <= max(2 * p_normal, p_normal + NOISE_S), (p_normal, p_under)
    # the flood was seen, the subscription paused (2 s), resumed into the same flood and paused
    # again for twice as long; the agent handled a bounded number of requests: the broker
    # stopped sending the rest
    assert st["floods"] >= 2, st
    handled = sum(st["requests"].values()) + st["inbox_dropped"]
    assert handled < FLOOD_PER_S * (time.time() - t1) / 2, st
    assert st["requests"]["ok"] <= 10 + 5 * (time.time() - t1) + 2, st  # burst + rate
    alarms = [json.loads(p) for p in backend.payloads("/alarm")]
    pauses = [a["pause_s"] for a in alarms if a["alarm"] == "command_flood"]
    assert pauses[:2] == [2.0, 4.0], alarms
    assert agent.proc.poll() is None


def test_oldest_unsent_alarm_raised_then_cleared(
    tmp_path: Path, broker: Mosquitto, backend: Subscriber, scanner: Factory,
    agent_factory: Factory,
) -> None:  # fmt: skip
    assert backend.subscribed.wait(5)  # its persistent session then keeps what comes
    broker.stop()
    agent, sim = _start(
        tmp_path, broker, scanner, agent_factory, sections="[remote]\nalarm_oldest_unsent_s = 1"
    )
    sim.start(count=3)
    assert agent.wait_log("oldest_unsent_alarm", 15), agent.log_text()
    broker.start()
    assert backend.wait_for(lambda: len(_seqs_ids(backend, "scan_1")) >= 3, 15)

    def alarms() -> list[dict[str, Any]]:
        return [
            a for a in map(json.loads, backend.payloads("/alarm")) if a["alarm"] == "oldest_unsent"
        ]

    assert backend.wait_for(lambda: [a["state"] for a in alarms()] == ["raised", "cleared"], 15)
    raised = alarms()[0]
    assert raised["kind"] == "reading" and raised["threshold_s"] == 1 and raised["age_s"] > 1
    validators = schema_validator()
    for a in alarms():
        validators["alarm.v1.json"].validate(a)


def test_broker_packet_size_and_receive_maximum_are_honoured(
    tmp_path: Path, scanner: Factory, agent_factory: Factory
) -> None:
    """A backlog drained to a broker that accepts packets of at most 4 KiB and 6 unacknowledged
    messages: every batch is split to fit, nothing is refused, every reading arrives."""
    broker = Mosquitto(tmp_path / "small", extra="max_packet_size 4096\nmax_inflight_messages 6\n")
    broker.start()
    sub = Subscriber(broker.port)
    try:
        assert sub.subscribed.wait(5)
        broker.stop()
        agent, sim = _start(tmp_path, broker, scanner, agent_factory)
        sim.start(count=200)  # ~400 bytes each: a 500-reading batch would be ~80 KiB
        sim.wait(20)
        broker.start()
        assert sub.wait_for(lambda: len(_seqs_ids(sub, "scan_1")) >= 200, 20), agent.log_text()
        assert sorted(s for s, _ in _seqs_ids(sub, "scan_1"))[:200] == list(range(1, 201))
        sizes = [len(p) for t, p, _r in sub.messages if t.endswith("/batch")]
        assert sizes and max(sizes) <= 4096 - 64, sizes
        events = agent.events()
        assert not [
            e for e in events if e["event"] in ("mqtt_disconnected", "mqtt_publish_rejected")
        ]
        st = request(tmp_path / "ctl.sock", {"cmd": "status"})["status"]["broker"]
        assert st["rejects"] == {} and st["reconnects"] == 0, st
    finally:
        sub.close()
        broker.stop()


HISTORY = 10_000


@pytest.mark.slow
def test_resend_throughput_while_live_traffic_runs(
    tmp_path: Path, broker: Mosquitto, backend: Subscriber, scanner: Factory,
    agent_factory: Factory,
) -> None:  # fmt: skip
    """10,000 sent rows of history resent while a scanner reads 25/s: every row comes back
    (same ids), live readings keep arriving promptly; prints rows/s (the issue's closing note)."""
    from edge_agent.outbox import Outbox
    from edge_agent.reading import Capture, Decoded, Identity, Kind

    db = tmp_path / "state" / "queue.db"
    db.parent.mkdir(parents=True)
    ob = Outbox(db, Identity("test-agent", "T1", "L1", "boot"), 512 << 20, 72 * 3600)
    caps = [
        Capture.now("hist_1", Decoded(Kind.BARCODE, f"H{i:08d}", f"H{i:08d}\r\n".encode()))
        for i in range(HISTORY)
    ]
    accepted, _ = ob.apply(caps)
    ob.apply([], sent=[n for n, _r in accepted])
    ids = {r.seq: r.id for _n, r in accepted}
    ob.close()
    agent, _sim = _start(tmp_path, broker, scanner, agent_factory)
    live = scanner("live", rate=25, seed=3)
    cfg = agent.config.read_text().replace("[devices.scan_1]", "[devices.live_1]\n"
        + "\n".join(f"{k} = {json.dumps(v)}" for k, v in scanner_device(live).items())
        + "\n[devices.scan_1]")  # fmt: skip
    agent.stop()
    agent.config.write_text(cfg)
    agent.start()
    hub = RemoteClient(broker.port)
    try:
        t0 = time.time()
        live.start(count=300)
        time.sleep(0.5)
        t_req = time.monotonic()
        ans = hub.call("resend", {"device": "hist_1", "seq_from": 1, "seq_to": HISTORY}, 120)
        round_trip = time.monotonic() - t_req
        live.wait(30)
        assert backend.wait_for(lambda: len(_latencies(backend, "live_1", t0)) >= 300, 15)
    finally:
        hub.close()
    res = ans["result"]
    assert res["sent"] == HISTORY and res["gone"] == [] and res["complete"], res

    def resent() -> dict[int, str]:
        return {r["seq"]: r["id"] for _t, r in backend.readings() if r["device"] == "hist_1"}

    assert backend.wait_for(lambda: len(resent()) == HISTORY, 10)
    got = resent()
    assert got == ids
    lat = _latencies(backend, "live_1", t0)
    rate = HISTORY / res["seconds"]
    print(f"resend {HISTORY} rows in {res['seconds']:.2f} s = {rate:.0f} rows/s "
          f"(request to answer {round_trip:.2f} s = {HISTORY / round_trip:.0f} rows/s); "
          f"live p50 {lat[len(lat) // 2] * 1000:.1f} ms p99 {_p99(lat) * 1000:.1f} ms")  # fmt: skip
    assert _p99(lat) < 1.0, lat[-5:]


def test_allowed_device_zero_and_tare_reach_the_scale(
    tmp_path: Path, broker: Mosquitto, backend: Subscriber, agent_factory: Factory
) -> None:
    from simulators._scale_model import Display
    from simulators.mtsics_scale import MtSicsSim, MtSicsSimConfig
    from simulators.pty_port import PtyPort

    sim = MtSicsSim(
        PtyPort(tmp_path / "calm"), MtSicsSimConfig(display=Display("kg", 3, 5), seed=5)
    )
    sim.port.plug()
    scale = {"type": "mtsics_scale", "port": str(sim.port.link), "poll_interval_ms": 100,
             "max_capacity_g": 30000}  # fmt: skip
    allow = '[remote]\nallow = ["ping", "status", "device"]'
    agent = agent_factory(agent_config(tmp_path, broker.port, {"scale_1": scale}, sections=allow))
    agent.start()
    sim.start()
    hub = RemoteClient(broker.port)
    try:
        ctl = tmp_path / "ctl.sock"
        assert backend.wait_for(
            lambda: (
                request(ctl, {"cmd": "status"})["status"]["devices"]["scale_1"]["state"]
                == "connected"
            ),
            10,
        )
        before = sum(t.kind == "command" for t in sim.truth)
        zero = hub.call("device", {"device": "scale_1", "action": "zero"})
        assert zero["ok"] and zero["result"]["reply"] in ("A", "I", "+", "-"), zero
        tare = hub.call("device", {"device": "scale_1", "action": "tare"})
        assert tare["ok"] and tare["result"]["reply"] in ("S", "I"), tare
        assert backend.wait_for(
            lambda: sum(t.kind == "command" for t in sim.truth) >= before + 2, 2
        )
        gone = hub.call("device", {"device": "nope", "action": "zero"})
        assert gone["error"] == {
            "code": "failed", "reason": "no device 'nope' (devices: scale_1)"
        }  # fmt: skip
        bad = hub.call("device", {"device": "scale_1", "action": "explode"})
        assert bad["error"]["code"] == "bad_args", bad
        assert hub.call("resend", {"device": "scale_1", "seq_from": 1, "seq_to": 2})["error"][
            "code"
        ] == "not_allowed"  # fmt: skip
    finally:
        hub.close()
        sim.stop()
        sim.port.close()
