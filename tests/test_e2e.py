"""End to end with real parts: simulator -> pty -> `edge-agent run` -> Mosquitto -> subscriber.

Each test ends with the accounting oracle (docs/reliability.md (c)): every row the agent committed
reached the backend; duplicates carry the same id; the queue file passes integrity_check.
The broker-outage and kill -9 scenarios live in tests/faults/ (T1-T4).
"""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from simulators.mosquitto import Mosquitto
from simulators.serial_line_scanner import ScannerSim
from tests.harness import Subscriber, agent_config, queue_rows, schema_validator

Factory = Callable[..., Any]


def scanner_device(sim: ScannerSim, **extra: object) -> dict[str, object]:
    return {
        "type": "serial_line_scanner",
        "port": str(sim.port.link),
        "framing": sim.cfg.framing,
        "terminator": sim.cfg.terminator,
        "aim_ids": sim.cfg.aim,
        **extra,
    }


def emitted(sim: ScannerSim) -> list[tuple[str, str | None]]:
    return [(t.kind, t.value) for t in sim.truth if t.kind in ("barcode", "noread") and t.delivered]


def received(backend: Subscriber, device: str) -> list[dict[str, Any]]:
    return [r for _, r in backend.readings() if r["device"] == device]


def assert_oracle(backend: Subscriber, db: Path) -> list[dict[str, Any]]:
    """Every committed row arrived; duplicates only with the same id; seq has no holes."""
    rows = queue_rows(db)
    got = backend.readings()
    ids = {r["id"] for _, r in got}
    missing = [r for r in rows if r["id"] not in ids]
    assert not missing, f"{len(missing)} committed readings never arrived: {missing[:3]}"
    by_seq: dict[tuple[str, int], set[str]] = {}
    for _, r in got:
        by_seq.setdefault((r["device"], r["seq"]), set()).add(r["id"])
    assert all(len(v) == 1 for v in by_seq.values()), "a (device, seq) arrived under two ids"
    for dev in {r["device"] for r in rows}:
        seqs = sorted(r["seq"] for r in rows if r["device"] == dev)
        assert seqs == list(range(1, len(seqs) + 1))
    return rows


def test_every_reading_arrives_with_values_and_valid_schema(
    tmp_path: Path, broker: Mosquitto, backend: Subscriber, scanner: Factory, agent_factory: Factory
) -> None:
    tunnel = scanner(
        "tunnel",
        framing="stx_etx",
        rate=150,
        seed=3,
        scanner_no=1,
        faults={"fragment": 0.3, "coalesce": 0.2, "noread": 0.05},
    )
    hand = scanner("hand", framing="terminator", terminator="CR", rate=100, seed=4, scanner_no=2)
    cfg = agent_config(
        tmp_path,
        broker.port,
        {
            "tunnel_1": scanner_device(tunnel),
            "hand_1": scanner_device(hand),
        },
    )
    agent = agent_factory(cfg)
    agent.start()
    tunnel.start(count=300)
    hand.start(count=200)
    tunnel.wait(20)
    hand.wait(20)
    assert backend.wait_for(lambda: len(backend.readings()) >= 500, 20), len(backend.readings())
    for dev, sim in (("tunnel_1", tunnel), ("hand_1", hand)):
        got = received(backend, dev)
        assert [(r["kind"], r["value"]) for r in got] == emitted(sim)
        assert [r["seq"] for r in got] == list(range(1, len(got) + 1))
        truth = {t.value: t for t in sim.truth if t.kind == "barcode"}
        for r in got:
            if r["kind"] == "barcode":
                assert r["aim"] == truth[r["value"]].aim
                assert r["symbology"] == ("gs1-128" if r["aim"] == "]C1" else "code128")
            assert bytes.fromhex(r["raw"]).endswith(b"\x03" if dev == "tunnel_1" else b"\r")
    validators = schema_validator()
    for topic, payload, _ in backend.messages:
        if "/reading/" in topic:
            validators["reading.v1.json"].validate(json.loads(payload))
            assert topic == f"edge/v1/T1/L1/test-agent/reading/{json.loads(payload)['device']}"
        elif topic.endswith("/batch"):
            validators["batch.v1.json"].validate(json.loads(payload))
    status = [(p, r) for t, p, r in backend.messages if t.endswith("/status")]
    assert status and json.loads(status[-1][0])["state"] == "online"
    validators["status.v1.json"].validate(json.loads(status[-1][0]))
    agent.stop()
    assert_oracle(backend, tmp_path / "state" / "queue.db")


def test_garbled_noisy_stream_good_frames_arrive_rejects_counted(
    tmp_path: Path, broker: Mosquitto, backend: Subscriber, scanner: Factory, agent_factory: Factory
) -> None:
    faults = {"noise": 0.15, "garble": 0.1, "partial": 0.08, "fragment": 0.4, "coalesce": 0.2}
    sims = [
        scanner("stx", framing="stx_etx", rate=100, seed=7, scanner_no=3, faults=faults),
        scanner("crlf", framing="terminator", rate=100, seed=8, scanner_no=4, faults=faults),
    ]
    devices = {f"s_{s.cfg.framing}": scanner_device(s) for s in sims}
    agent = agent_factory(agent_config(tmp_path, broker.port, devices))
    agent.start()
    for s in sims:
        s.start(count=250)
    for s in sims:
        s.wait(30)
    for s in sims:
        want = emitted(s)
        dev = f"s_{s.cfg.framing}"

        def all_in(d: str = dev, w: list[tuple[str, str | None]] = want) -> bool:
            return len(received(backend, d)) >= len(w)

        assert backend.wait_for(all_in, 20)
        assert [(r["kind"], r["value"]) for r in received(backend, dev)] == want
    time.sleep(0.3)
    agent.stop()
    rejects = Counter(
        (e["device"], e["reason"]) for e in agent.events() if e["event"] == "frame_rejected"
    )
    for s in sims:
        dev = f"s_{s.cfg.framing}"
        truth = Counter(t.kind for t in s.truth)
        assert rejects[(dev, "garbled")] == truth["garbled"] > 0, (dev, rejects, truth)
        assert rejects[(dev, "partial")] == truth["partial"] > 0
        assert rejects[(dev, "noise")] == truth["noise"] > 0
    assert_oracle(backend, tmp_path / "state" / "queue.db")


def test_unplug_replug_resumes_within_2s(
    tmp_path: Path, broker: Mosquitto, backend: Subscriber, scanner: Factory, agent_factory: Factory
) -> None:
    sim = scanner("scan", rate=50, seed=9)
    agent = agent_factory(agent_config(tmp_path, broker.port, {"scan_1": scanner_device(sim)}))
    agent.start()
    sim.start(count=0)
    delays = []
    for _ in range(3):
        time.sleep(0.8)
        sim.unplug(1.0)  # returns right after the replug
        replugged = time.monotonic()
        before = len(received(backend, "scan_1"))
        first = sim._n

        def resumed(b: int = before, f: int = first) -> bool:
            return any(
                int(r["value"][3:]) > f for r in received(backend, "scan_1")[b:] if r["value"]
            )

        assert backend.wait_for(resumed, 5)
        delays.append(time.monotonic() - replugged)
    sim.stop()
    assert max(delays) < 2.0, delays
    states = [json.loads(p)["state"] for p in backend.payloads("/device/scan_1/state")]
    assert states.count("reconnecting") >= 3 and states[-1] == "connected"
    agent.stop()
    assert_oracle(backend, tmp_path / "state" / "queue.db")


def test_sigterm_flushes_and_exits_within_2s(
    tmp_path: Path, broker: Mosquitto, backend: Subscriber, scanner: Factory, agent_factory: Factory
) -> None:
    sim = scanner("scan", rate=200, seed=10)
    agent = agent_factory(agent_config(tmp_path, broker.port, {"scan_1": scanner_device(sim)}))
    agent.start()
    sim.start(count=0)
    time.sleep(1.5)
    t0 = time.monotonic()
    assert agent.kill(signal.SIGTERM) == 0
    elapsed = time.monotonic() - t0
    sim.stop()
    assert elapsed < 2.0, elapsed
    rows = queue_rows(tmp_path / "state" / "queue.db")
    pending = [r for r in rows if r["sent_ns"] is None]
    assert len(pending) <= 1, f"{len(pending)} rows left unsent after a graceful stop"
    assert backend.wait_for(lambda: backend.states()[-1:] == ["offline-clean"], 3)
