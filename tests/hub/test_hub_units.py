"""The hub's pure parts: message decoding (no database, no broker) and its systemd unit."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from edge_agent.hub import decode
from tests.harness import ROOT
from tests.hub.publish import reading

UNIT = ROOT / "systemd" / "edge-agent-hub.service"
BASE = "edge/v1/S1/L1/a1"


def bad(**fields: object) -> str:
    """A reading of a1/scan_1 with ``fields`` overridden, as JSON."""
    return json.dumps({**reading("a1", "scan_1", 1), **fields})


T = f"{BASE}/reading/scan_1"


def rows_of(*msgs: tuple[str, bytes]) -> decode.Rows:
    rows = decode.Rows()
    for topic, payload in msgs:
        decode.add(rows, "edge", topic, payload)
    return rows


def test_reading_batch_and_the_agent_from_the_topic() -> None:
    r1, r2 = reading("spoofed", "scan_1", 1), reading("a1", "scan_1", 2)
    rows = rows_of(
        (f"{BASE}/reading/scan_1", json.dumps(r1).encode()),
        (f"{BASE}/batch", json.dumps({"readings": [r2], "count": 1}).encode()),
    )
    assert [(r[0], r[1], r[4], r[5]) for r in rows.readings] == [
        (r1["id"], "a1", "scan_1", 1),
        (r2["id"], "a1", "scan_1", 2),
    ]
    assert rows.seen == {"a1": ("S1", "L1")} and not rows.rejects


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        (T, b"\xff", "bad_json"),
        (T, b"[1]", "not_an_object"),
        (f"{BASE}/reading/scan_2", bad(), "reading_bad_device"),
        (T, bad(id="x"), "reading_bad_id"),
        (T, bad(seq=True), "reading_bad_seq"),
        (T, bad(seq=0), "reading_bad_seq"),
        (T, bad(ts="2026-12-05 12:00"), "bad_ts"),
        (T, bad(value="a\x00"), "nul_character"),
        (f"{BASE}/batch", json.dumps({"readings": 3}), "batch_without_readings"),
        (f"{BASE}/status", b"maybe", "bad_json"),
        (f"{BASE}/status", json.dumps({"state": "asleep"}), "status_bad_state"),
        ("edge/v1/S1/L1/a+b/alarm", b"{}", "bad_topic_id"),
        (f"{BASE}/whatever", b"{}", "unknown_topic"),
        ("other/v1/S1/L1/a1/alarm", b"{}", "unknown_topic"),
    ],
)  # fmt: skip
def test_bad_messages_become_rejects_with_a_reason(
    topic: str, payload: str | bytes, reason: str
) -> None:
    data = payload.encode() if isinstance(payload, str) else payload
    rows = rows_of((topic, data))
    assert [(t, p, why) for _, t, p, why in rows.rejects] == [(topic, data, reason)]
    assert not rows.readings


def test_status_plain_and_v1() -> None:
    doc = {"schema": "edge-agent/status/v1", "state": "offline-clean", "version": "1"}
    rows = rows_of((f"{BASE}/status", b"online"), (f"{BASE}/status", json.dumps(doc).encode()))
    assert [(s[3], s[4]) for s in rows.statuses] == [("online", None), ("offline-clean", doc)]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_hub_unit_verifies_and_exposure_is_at_most_2_0() -> None:
    r = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--threshold=20", str(UNIT)],
        capture_output=True,
        text=True,
        check=False,
    )
    m = re.search(r"Overall exposure level for edge-agent-hub\.service: (\d+\.\d)", r.stdout)
    assert m, r.stdout + r.stderr
    assert float(m[1]) <= 2.0 and r.returncode == 0, r.stdout
    v = subprocess.run(
        ["systemd-analyze", "verify", str(UNIT)], capture_output=True, text=True, check=False
    )
    assert "Unknown key" not in v.stderr and "Unknown section" not in v.stderr, v.stderr
