"""``queue replay``: every kind back on its own topic (the publisher's own mapping), same ids,
and PUBACK reason codes checked. Real SQLite queue, real Mosquitto (with an ACL for refusals)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from edge_agent.outbox import Outbox, OutEvent
from edge_agent.reading import Capture, Decoded, Identity, Kind
from simulators.mosquitto import Mosquitto
from tests.harness import ROOT, Subscriber, acl_broker_and_config, agent_config

NODE = Identity(agent="test-agent", site="T1", line="L1", boot_id="b")
BASE = "edge/v1/T1/L1/test-agent"


def fill(db: Path) -> None:
    """Readings, a parcel event, an exception, more readings: in that queue order."""
    db.parent.mkdir(parents=True, exist_ok=True)
    ob = Outbox(db, NODE, 1 << 24, 3600)
    try:
        cap = [Capture.now("s1", Decoded(Kind.BARCODE, f"SF{i:013d}", b"x\r\n")) for i in range(5)]
        ob.apply(cap[:3])
        ob.apply([], events=[OutEvent("parcel", "st1", {"codes": ["SF1"]})])
        ob.apply([], events=[OutEvent("exception", "st1", {"type": "noread"}, prio=1)])
        ob.apply(cap[3:])
    finally:
        ob.close()


def replay(cfg: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_agent", "queue", "replay", "--since", "1h", "-c", str(cfg),
         "--json"],
        capture_output=True, text=True, cwd=ROOT, timeout=60, check=False,
    )  # fmt: skip


def test_replay_puts_every_kind_on_its_own_topic(
    tmp_path: Path, broker: Mosquitto, backend: Subscriber
) -> None:
    cfg = agent_config(tmp_path, broker.port, {})
    fill(tmp_path / "state" / "queue.db")
    res = replay(cfg)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == {
        "replayed": 7,
        "kinds": {"reading": 5, "parcel": 1, "exception": 1},
    }
    assert backend.wait_for(lambda: len(backend.messages) >= 4, 10)
    by_topic: dict[str, list[dict[str, Any]]] = {}
    for topic, payload, _ in backend.messages:
        by_topic.setdefault(topic.removeprefix(BASE + "/"), []).append(json.loads(payload))
    assert sorted(by_topic) == ["batch", "exception/st1", "parcel/st1"], sorted(by_topic)
    assert [b["count"] for b in by_topic["batch"]] == [3, 2]  # events split the batches
    for batch in by_topic["batch"]:
        assert {r["kind"] for r in batch["readings"]} == {"barcode"}
    assert by_topic["parcel/st1"][0]["schema"] == "edge-agent/parcel/v1"
    assert by_topic["exception/st1"][0]["schema"] == "edge-agent/exception/v1"


def test_replay_reports_a_refused_publish_with_its_reason_code(tmp_path: Path) -> None:
    acl = (  # readings and batches allowed, station events not
        f"topic write {BASE}/batch\ntopic write {BASE}/reading/#\ntopic write {BASE}/exception/#\n"
    )
    broker, cfg = acl_broker_and_config(tmp_path, acl)
    broker.start()
    try:
        fill(tmp_path / "state" / "queue.db")
        res = replay(cfg)
    finally:
        broker.stop()
    assert res.returncode == 1, res.stdout
    assert res.stderr.splitlines()[-1] == (
        "edge-agent: the broker refused part of the replay (1 rows: 0x87 Not authorized); "
        "6 acknowledged"
    )
