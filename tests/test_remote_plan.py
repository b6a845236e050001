"""The resend planner on a real SQLite queue: rows by seq or time, and the gone ranges told
apart (purged after sending, refused at the queue bound, never given), plus request parsing."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from edge_agent import outbox as q
from edge_agent.reading import Capture, Decoded, Identity, Kind, iso_utc
from edge_agent.remote.protocol import RequestError, parse
from edge_agent.remote.resend import plan

NODE = Identity("a1", "S", "L", "boot")
BASE = "edge/v1/S/L/a1"


def _cap(i: int) -> Capture:
    return Capture.now("d1", Decoded(Kind.BARCODE, f"C{i:05d}", b"x" * 200))


def test_plan_tells_purged_refused_and_unknown_apart(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    ob = q.Outbox(db, NODE, max_bytes=10_000, retain_sent_s=0)
    accepted, dropped = ob.apply([_cap(i) for i in range(30)])
    assert dropped, "the bound must refuse some of the 30"
    ids = {r.seq: r.id for _n, r in accepted}
    refused = sorted(r.seq for r in dropped)
    ob.apply([], sent=[n for n, _r in accepted[:5]])  # seqs 1..5 sent ...
    assert ob.purge_sent_before(time.time_ns() + 1) == 5  # ... and purged
    con = q.open_reader(db)
    try:
        p = plan(con, {"device": "d1", "seq_from": 1, "seq_to": 40}, 100)
        got = [r.payload for r in p.rows]
        assert len(got) == len(accepted) - 5
        seqs = range(6, 6 + len(got))
        assert all(f'"id":"{ids[s]}"'.encode() in pl for s, pl in zip(seqs, got, strict=True))
        assert p.gone == [
            {"seq_from": 1, "seq_to": 5, "reason": "purged"},
            {"seq_from": refused[0], "seq_to": refused[-1], "reason": "refused"},
            {"seq_from": 31, "seq_to": 40, "reason": "unknown"},
        ]
        assert plan(con, {"device": "nope", "seq_from": 1, "seq_to": 2}, 100).gone == [
            {"seq_from": 1, "seq_to": 2, "reason": "unknown"}
        ]
        t0 = iso_utc(time.time_ns() - 60 * 10**9)
        t1 = iso_utc(time.time_ns() + 10**9)
        by_time = plan(con, {"device": "d1", "ts_from": t0, "ts_to": t1}, 100)
        assert [r.n for r in by_time.rows] == [r.n for r in p.rows]
        cases: list[tuple[dict[str, Any], str]] = [
            ({"device": "d1", "seq_from": 0, "seq_to": 2}, "seq_from must be an integer >= 1"),
            ({"device": "d1", "seq_from": 1, "seq_to": 200}, "at most 100 per request"),
            ({"device": "d1", "ts_from": "yesterday", "ts_to": t1}, "ISO 8601"),
            ({"device": "d1", "ts_from": "2026-01-01T00:00:00", "ts_to": t1}, "with a zone"),
            ({"device": 3, "seq_from": 1, "seq_to": 2}, "device must be"),
            ({"device": "d1"}, "give seq_from and seq_to"),
        ]
        for bad, why in cases:
            with pytest.raises(RequestError, match=why) as err:
                plan(con, bad, 100)
            assert err.value.code == "bad_args"
    finally:
        con.close()
        ob.close()


@pytest.mark.parametrize(
    ("topic", "payload", "prop", "code", "reply"),
    [
        (f"{BASE}/cmd/ping", b'{"schema":"edge-agent/command/v1","id":"x"}', None, None, "_"),
        (f"{BASE}/cmd/ping", b"{}", f"{BASE}/response/h", "malformed", "h"),
        (f"{BASE}/cmd/ping", b"\x00", f"{BASE}/response/h", "malformed", "h"),
        (f"{BASE}/cmd/ping", b"{}", "edge/v1/S/L/a2/response/h", "malformed", "_"),
        (f"{BASE}/cmd/ping", b"{}", f"{BASE}/response/#", "malformed", "_"),
        (f"{BASE}/cmd/a/b", b'{"schema":"edge-agent/command/v1","id":"x"}', None,
         "unknown_command", "_"),
        (f"{BASE}/cmd/ping", b'{"schema":"edge-agent/command/v1","id":"x","reply_to":"'
         + f"{BASE}/response/h".encode() + b'","correlation":"c1"}', None, None, "h"),
        (f"{BASE}/cmd/ping", b" " * 20_000, None, "malformed", "_"),
    ],
)  # fmt: skip
def test_parse(topic: str, payload: bytes, prop: str | None, code: str | None, reply: str) -> None:
    req = parse(BASE, topic, payload, prop, None)
    assert (req.error.code if req.error else None) == code, req.error
    assert req.reply_to == f"{BASE}/response/{reply}"


def test_reconnect_waits_are_jittered() -> None:
    """The first wait after a drop is spread over FIRST_RETRY_S (a fleet does not come back in
    one 100 ms window), shorter right after a refused publish, then doubles with +-50 %."""
    from edge_agent.reconnect_jitter import AFTER_REJECT_RETRY_S, FIRST_RETRY_S, jittered_delay

    first = [jittered_delay(0, 10.0, 1e9) for _ in range(3000)]
    assert FIRST_RETRY_S[0] <= min(first) and max(first) <= FIRST_RETRY_S[1]
    windows = {int(w * 10) for w in first}
    assert len(windows) >= 9, windows  # 0.1-1.0 s: every 100 ms window used
    after_reject = [jittered_delay(0, 10.0, 0.5) for _ in range(300)]
    assert max(after_reject) <= AFTER_REJECT_RETRY_S[1]
    third = [jittered_delay(2, 10.0, 1e9) for _ in range(300)]
    assert min(third) >= 1.0 and max(third) <= 3.0 and len({round(t, 2) for t in third}) > 50
    capped = [jittered_delay(9, 10.0, 1e9) for _ in range(300)]
    assert min(capped) >= 5.0 and max(capped) <= 10.0  # never over reconnect_max_s, spread
    assert max(jittered_delay(0, 0.5, 1e9) for _ in range(300)) <= 0.5
