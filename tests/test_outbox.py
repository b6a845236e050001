"""The SQLite outbox: ids and seq before commit, persistence, bound behaviour, crash safety."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from edge_agent import outbox as q
from edge_agent.outbox import Outbox
from edge_agent.reading import Capture, Decoded, Identity, Kind

NODE = Identity(agent="a1", site="S1", line="L1", boot_id="b")


def cap(device: str, value: str) -> Capture:
    return Capture.now(device, Decoded(Kind.BARCODE, value, value.encode() + b"\r\n"))


def test_wal_full_and_quick_check_asserted(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "q.db", NODE, 1 << 20, 3600)
    con = sqlite3.connect(tmp_path / "q.db")
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    ob.close()


def test_seq_per_device_survives_reopen(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    ob = Outbox(db, NODE, 1 << 20, 3600)
    acc, _ = ob.apply([cap("d1", "A"), cap("d2", "B"), cap("d1", "C")])
    assert [(r.device, r.seq) for _, r in acc] == [("d1", 1), ("d2", 1), ("d1", 2)]
    ob.close()
    ob = Outbox(db, NODE, 1 << 20, 3600)
    acc, _ = ob.apply([cap("d1", "D")])
    assert acc[0][1].seq == 3
    rows = q.fetch_pending(q.open_reader(db), 0, 10)
    assert [json.loads(r.payload)["value"] for r in rows] == ["A", "B", "C", "D"]
    assert [r.n for r in rows] == [n for n, _ in [(1, 0), (2, 0), (3, 0), (4, 0)]]


def test_rows_leave_pending_only_when_marked_sent(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    ob = Outbox(db, NODE, 1 << 20, 3600)
    acc, _ = ob.apply([cap("d1", str(i)) for i in range(5)])
    ns = [n for n, _ in acc]
    ob.apply([], sent=ns[:2], rejected=[(ns[2], 0x87, "Not authorized")])
    reader = q.open_reader(db)
    assert [r.n for r in q.fetch_pending(reader, 0, 10)] == ns[3:]
    assert [r.n for r in q.fetch_rejected(reader, 10)] == [ns[2]]
    st = q.stats(reader)
    assert (st.pending, st.sent, st.accepted, st.rejected) == (3, 2, 5, 1)
    ob.apply([], sent=[ns[2]])  # a retried rejected row that succeeds
    assert q.fetch_rejected(reader, 10) == []


def test_bound_purges_sent_first_then_refuses_and_counts(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    size = len(
        Outbox(tmp_path / "probe.db", NODE, 1 << 20, 0)
        .apply([cap("d1", "X" * 10)])[0][0][1]
        .to_json()
    )
    ob = Outbox(db, NODE, 1 << 20, 3600)
    ob.max_bytes = size * 10 + size // 2  # room for 10 readings
    acc, dropped = ob.apply([cap("d1", f"X{i:09d}") for i in range(10)])
    assert len(acc) == 10 and not dropped
    ob.apply([], sent=[n for n, _ in acc[:4]])
    acc2, dropped = ob.apply([cap("d1", f"Y{i:09d}") for i in range(6)])
    assert len(acc2) == 4 and len(dropped) == 2  # 4 sent rows purged to make room, then full
    assert [r.seq for r in dropped] == [15, 16]  # seq consumed: the backend sees the gap
    assert ob.counters["dropped"] == 2
    reader = q.open_reader(db)
    assert q.stats(reader).dropped == 2
    assert q.stats(reader).pending == 10  # no committed pending row was evicted


CRASH_WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from edge_agent.outbox import Outbox
    from edge_agent.reading import Capture, Decoded, Identity, Kind
    ob = Outbox(Path(sys.argv[1]), Identity("a", "s", "l", "b"), 1 << 30, 3600)
    i = 0
    while True:
        batch = [Capture.now("d1", Decoded(Kind.BARCODE, f"C{i + k}", b"x")) for k in range(3)]
        acc, _ = ob.apply(batch)
        i += 3
        sys.stdout.write("".join(f"{r.id} {r.seq}\\n" for _, r in acc))
        sys.stdout.flush()
    """
)


def test_kill_9_never_loses_a_committed_row(tmp_path: Path) -> None:
    """T16: SIGKILL the real outbox code mid-write 15 times; every acked row is in the file."""
    db = tmp_path / "q.db"
    acked: dict[str, int] = {}
    for _ in range(15):
        proc = subprocess.Popen(
            [sys.executable, "-c", CRASH_WRITER, str(db)], stdout=subprocess.PIPE, text=True
        )
        time.sleep(0.15 + 0.05 * (len(acked) % 4))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate()
        for line in out.splitlines():
            if line.count(" ") == 1:
                uid, seq = line.split()
                acked[uid] = int(seq)
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    stored = dict(con.execute("SELECT id, seq FROM outbox").fetchall())
    assert len(acked) > 100
    assert set(acked) <= set(stored)
    assert all(stored[u] == s for u, s in acked.items())
    seqs = sorted(stored.values())
    assert seqs == list(range(1, len(seqs) + 1))  # strictly increasing, no gap, no reuse
