"""T15: a stateful model test of the real ``Outbox`` on a real SQLite file
(docs/reliability.md (c)).

Rules drive the outbox the way the daemon does: the writer's ``Outbox.apply`` (captures, station
events, PUBACK marks in one transaction), the publisher's cursors over ``fetch_pending`` with a
window of 20 messages, success and failure PUBACKs (>= 0x80), the once-a-minute retry of
rejected rows, disconnects (in-flight forgotten, cursors rewound), a queue bound that purges sent
rows and refuses new readings, and crashes: a clean reopen, or a "kill -9" that reopens a copy of
the files taken while the connection is still open (what is on disk after the last fsync).

After every step the table is checked against the model; at the end a stable broker publishes
and acks everything, and every committed row must then be sent.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import event
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from edge_agent import outbox as q
from edge_agent.outbox import Outbox, OutEvent
from edge_agent.reading import Capture, Decoded, Identity, Kind
from tests.fuzz.profiles import model_settings

pytestmark = pytest.mark.faults

NODE = Identity(agent="a1", site="S1", line="L1", boot_id="b")
DEVICES = ("d1", "d2", "d3")
WINDOW = 20  # messages awaiting a PUBACK (MqttConfig.inflight default)
BIG = 1 << 40
FAIL_CODES = (0x80, 0x87, 0x97, 0x99)


def capture(device: str, value: str) -> Capture:
    return Capture.now(device, Decoded(Kind.BARCODE, value, value.encode() + b"\r\n"))


@dataclass
class Publisher:
    """The publisher's RAM: cursors and messages in flight (lost on disconnect or crash)."""

    batch_max: int
    flying: list[list[int]] = field(default_factory=list)
    live: int = 0
    backlog: int = 0
    upto: int = 0
    prio: int = 0

    def rewind(self, reader: sqlite3.Connection) -> None:
        self.upto = q.max_n(reader)
        self.backlog = self.prio = 0
        self.live = self.upto

    def in_flight(self) -> set[int]:
        return {n for msg in self.flying for n in msg}


class OutboxModel(RuleBasedStateMachine):
    """The model: what was committed, acked and refused, against what the file holds."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="t15-"))
        self.path = self.dir / "q0.db"
        self.ob: Outbox | None = None
        self.reader: sqlite3.Connection | None = None
        self.pub = Publisher(batch_max=1)
        self.committed: dict[int, tuple[str, str, int]] = {}  # n -> (id, seq key, seq)
        self.sent: set[int] = set()
        self.rejected: dict[int, int] = {}  # n -> rc, last word a failure PUBACK
        self.dropped: dict[str, set[int]] = {}  # seq key -> seqs refused at the bound
        self.marks_sent: list[int] = []  # PUBACKs the writer has not committed yet
        self.marks_rej: list[tuple[int, int, str]] = []
        self.reject_marks = 0
        self.counter = 0
        self.restarts = 0

    # ---- set-up and helpers ---------------------------------------------------------------
    @initialize(
        batch_max=st.sampled_from([1, 3, 8]),
        bounded=st.booleans(),
    )
    def start(self, batch_max: int, bounded: bool) -> None:
        self.max_bytes = 40 * 420 if bounded else BIG  # ~40 readings of ~420 bytes
        self.pub = Publisher(batch_max=batch_max)
        self._open()

    def _open(self) -> None:
        self.ob = Outbox(self.path, NODE, self.max_bytes, 3600)
        self.reader = q.open_reader(self.path)
        self.pub = Publisher(batch_max=self.pub.batch_max)
        self.pub.rewind(self.reader)

    def _commit(self, captures: list[Capture], events: list[OutEvent]) -> None:
        assert self.ob is not None
        sent, rej = self.marks_sent, self.marks_rej
        self.marks_sent, self.marks_rej = [], []
        accepted, dropped = self.ob.apply(captures, sent, rej, events)
        self.sent |= set(sent) & set(self.committed)
        for n in sent:
            self.rejected.pop(n, None)
        for n, rc, _ in rej:
            if n not in self.sent:
                self.rejected[n] = rc
        self.reject_marks += len(rej)
        for n, reading in accepted:
            assert n not in self.committed, f"row number {n} handed out twice"
            self.committed[n] = (reading.id, reading.device, reading.seq)
        for reading in dropped:
            self.dropped.setdefault(reading.device, set()).add(reading.seq)
        if events:
            self._learn_events(len(events))

    def _learn_events(self, count: int) -> None:
        assert self.reader is not None
        rows = self.reader.execute(
            "SELECT n, id, kind, device, seq FROM outbox WHERE kind != 'reading' "
            "ORDER BY n DESC LIMIT ?",
            (count,),
        ).fetchall()
        assert len(rows) == count, "a station event was not committed"
        for n, uid, kind, device, seq in rows:
            self.committed[n] = (uid, f"{kind}:{device}", seq)

    def _publish(self, rows: list[q.PendingRow]) -> None:
        flying = self.pub.in_flight()
        rows = [r for r in rows if r.n not in flying]
        for i in range(0, len(rows), self.pub.batch_max):
            self.pub.flying.append([r.n for r in rows[i : i + self.pub.batch_max]])

    def _take(self, stream: str) -> bool:
        """The publisher's ``_take``: next rows of ``stream`` from its cursor; False if none."""
        assert self.reader is not None
        p = self.pub
        after, upto = {"priority": (p.prio, None), "live": (p.live, None)}.get(
            stream, (p.backlog, p.upto)
        )
        if stream == "backlog" and p.backlog >= p.upto:
            return False
        prio = stream == "priority"
        limit = 1 if prio else p.batch_max
        rows = q.fetch_pending(self.reader, after, limit, upto, priority=prio)
        self._check_fetched(rows, after, upto, prio)
        if not rows:
            if stream == "backlog":
                p.backlog = p.upto
            return False
        last = rows[-1].n
        if prio:
            p.prio = last
        elif stream == "live":
            p.live = last
        else:
            p.backlog = last
        self._publish(rows)
        return True

    def _check_fetched(
        self, rows: list[q.PendingRow], after: int, upto: int | None, prio: bool
    ) -> None:
        ns = [r.n for r in rows]
        assert ns == sorted(set(ns)), f"fetch_pending out of order: {ns}"
        for n in ns:
            assert n > after and (upto is None or n <= upto), (n, after, upto)
            assert n in self.committed, f"fetched row {n} was never committed"
            assert n not in self.sent, f"fetched row {n} is already sent"
            assert n not in self.rejected, f"fetched row {n} is rejected (retry path only)"
        assert all((r.kind == "exception") == prio for r in rows), "priority stream mixed up"

    def _ack(self, index: int, ok: bool, rc: int) -> None:
        msg = self.pub.flying.pop(index % len(self.pub.flying))
        if ok:
            self.marks_sent += msg
        else:
            self.marks_rej += [(n, rc, f"reason 0x{rc:02x}") for n in msg]

    # ---- rules ----------------------------------------------------------------------------
    @rule(
        values=st.lists(st.tuples(st.sampled_from(DEVICES), st.integers(0, 3)), max_size=6),
        parcel=st.booleans(),
        exception=st.booleans(),
    )
    def capture(self, values: list[tuple[str, int]], parcel: bool, exception: bool) -> None:
        """The writer's group commit: new readings, station events and the PUBACK marks."""
        caps = []
        for device, size in values:
            self.counter += 1
            caps.append(capture(device, f"SF{self.counter:013d}" + "X" * (100 * size)))
        events = [OutEvent("parcel", "st1", {"n": self.counter})] if parcel else []
        if exception:
            events.append(OutEvent("exception", "st1", {"what": "noread"}, prio=1))
        self._commit(caps, events)

    @rule()
    def writer_flush(self) -> None:
        """The writer commits PUBACK marks with no new readings."""
        self._commit([], [])

    @precondition(lambda self: len(self.pub.flying) < WINDOW)
    @rule()
    def publish_window(self) -> None:
        """Fill the window the way the publisher does: priority, then live, then backlog."""
        while len(self.pub.flying) < WINDOW and (
            self._take("priority") or self._take("live") or self._take("backlog")
        ):
            pass

    @precondition(lambda self: bool(self.pub.flying))
    @rule(index=st.integers(0, WINDOW), count=st.integers(1, WINDOW))
    def puback_ok(self, index: int, count: int) -> None:
        """Success PUBACKs for ``count`` messages in flight (from ``index`` on)."""
        for _ in range(min(count, len(self.pub.flying))):
            self._ack(index, True, 0)

    @precondition(lambda self: bool(self.pub.flying))
    @rule(index=st.integers(0, WINDOW), rc=st.sampled_from(FAIL_CODES))
    def puback_fail(self, index: int, rc: int) -> None:
        """A PUBACK with a failure reason code (e.g. 0x87 not authorised) for one message."""
        self._ack(index, False, rc)

    @precondition(lambda self: len(self.pub.flying) < WINDOW)
    @rule()
    def retry_rejected(self) -> None:
        """The once-a-minute retry of rows the broker refused."""
        assert self.reader is not None
        rows = q.fetch_rejected(self.reader, self.pub.batch_max)
        for r in rows:
            assert r.n in self.rejected and r.n not in self.sent, f"retry of row {r.n}"
        self._publish(rows)

    @rule()
    def disconnect(self) -> None:
        """The link drops: in-flight messages are forgotten, cursors rewound on reconnect."""
        assert self.reader is not None
        self.pub.flying.clear()
        self.pub.rewind(self.reader)

    @rule(hard=st.booleans())
    def crash_restart(self, hard: bool) -> None:
        """Both threads die: RAM (marks not committed, in-flight, cursors) is lost; reopen.

        ``hard``: copy the files while the writer's connection is still open (a kill -9 leaves
        the database and its WAL as of the last fsync, with no checkpoint on close).
        """
        assert self.ob is not None and self.reader is not None
        old = self.path
        if hard:
            self.restarts += 1
            self.path = self.dir / f"q{self.restarts}.db"
            shutil.copyfile(old, self.path)
            if Path(f"{old}-wal").exists():
                shutil.copyfile(f"{old}-wal", f"{self.path}-wal")
        self.reader.close()
        self.ob.close()
        self.marks_sent, self.marks_rej = [], []
        con = sqlite3.connect(self.path)
        try:
            assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        finally:
            con.close()
        self._open()

    # ---- invariants -----------------------------------------------------------------------
    @invariant()
    def table_matches_model(self) -> None:
        if self.reader is None:
            return
        rows = self.reader.execute(
            "SELECT n, id, kind, device, seq, sent_ns, reject_rc FROM outbox ORDER BY n"
        ).fetchall()
        in_db = {n for n, *_ in rows}
        ids = [uid for _, uid, *_ in rows]
        assert len(ids) == len(set(ids)), "duplicate ids in the outbox"
        assert in_db <= set(self.committed), f"rows never committed: {in_db - set(self.committed)}"
        gone = set(self.committed) - in_db
        assert gone <= self.sent, f"unsent committed rows lost: {sorted(gone - self.sent)}"
        db_sent = {n for n, *_, sent_ns, _ in rows if sent_ns is not None}
        assert db_sent == self.sent & in_db, (
            f"sent in db but not acked: {sorted(db_sent - self.sent)}; "
            f"acked and committed but not sent: {sorted((self.sent & in_db) - db_sent)}"
        )
        db_rej = {n: rc for n, *_, sent_ns, rc in rows if rc is not None}
        assert all(rc >= 0x80 for rc in db_rej.values())
        assert not set(db_rej) & db_sent, "a row with a >= 0x80 reject code is marked sent"
        assert db_rej == self.rejected, (db_rej, self.rejected)
        for n, uid, kind, device, seq, _, _ in rows:
            key = device if kind == "reading" else f"{kind}:{device}"
            assert self.committed[n] == (uid, key, seq), f"row {n} changed"

    @invariant()
    def seq_has_no_unexplained_holes(self) -> None:
        if self.ob is None:
            return
        per_key: dict[str, list[int]] = {}
        for n in sorted(self.committed):
            _, key, seq = self.committed[n]
            per_key.setdefault(key, []).append(seq)
        for key in set(per_key) | set(self.dropped):
            seqs, dropped = per_key.get(key, []), self.dropped.get(key, set())
            assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), f"{key}: {seqs}"
            assert not set(seqs) & dropped, f"{key}: a refused seq was also stored"
            top = self.ob.last_seq(key)
            assert set(seqs) | dropped == set(range(1, top + 1)), f"{key}: hole in seq"

    @invariant()
    def counters_match_the_table(self) -> None:
        if self.ob is None or self.reader is None:
            return
        pending, sent, size, readings = self.reader.execute(
            "SELECT count(*) FILTER (WHERE sent_ns IS NULL), "
            "count(*) FILTER (WHERE sent_ns IS NOT NULL), coalesce(sum(length(payload)), 0), "
            "coalesce(sum(length(payload)) FILTER (WHERE kind = 'reading'), 0) FROM outbox"
        ).fetchone()
        kept = {n for (n,) in self.reader.execute("SELECT n FROM outbox")}
        purged = set(self.committed) - kept
        c = self.ob.counters
        assert (c["pending"], c["bytes"]) == (pending, size)
        assert c["sent"] == len(self.sent), (c["sent"], len(self.sent))
        assert sent == len(self.sent - purged)
        assert c["accepted"] == len(self.committed)
        assert c["dropped"] == sum(len(s) for s in self.dropped.values())
        assert c["rejected"] == self.reject_marks
        stats = q.stats(self.reader)
        assert (stats.pending, stats.sent, stats.bytes) == (c["pending"], c["sent"], c["bytes"])
        # readings are refused at the bound; station events never are (they say what was lost)
        assert readings <= self.max_bytes

    # ---- the stable broker ----------------------------------------------------------------
    def teardown(self) -> None:
        try:
            if self.ob is not None:
                self._drain_with_a_stable_broker()
        finally:
            for con in (self.reader, self.ob):
                if con is not None:
                    con.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    def _drain_with_a_stable_broker(self) -> None:
        """Reconnect, publish everything, every PUBACK a success: all committed rows are sent."""
        assert self.reader is not None
        event(f"rows committed: {min(len(self.committed) // 50 * 50, 200)}+")
        event(f"readings refused at the bound: {bool(self.dropped)}")
        (kept,) = self.reader.execute(
            "SELECT count(*) FROM outbox WHERE sent_ns NOT NULL"
        ).fetchone()
        event(f"sent rows purged at the bound: {len(self.sent) > kept}")
        event(f"rows rejected (>= 0x80) before the drain: {bool(self.rejected)}")
        event(f"hard (kill -9 copy) restarts: {min(self.restarts, 3)}")
        self.disconnect()
        for _ in range(len(self.committed) + 10):
            self.publish_window()
            self._publish(q.fetch_rejected(self.reader, 1000))
            while self.pub.flying:
                self._ack(0, True, 0)
            self._commit([], [])
            self.pub.rewind(self.reader)
            if not (q.fetch_pending(self.reader, 0, 1) or q.fetch_rejected(self.reader, 1)):
                break
        self.table_matches_model()
        self.counters_match_the_table()
        unsent = set(self.committed) - self.sent
        assert not unsent, f"committed rows never sent with a stable broker: {sorted(unsent)}"
        assert self.ob is not None and self.ob.counters["pending"] == 0


OutboxModel.TestCase.settings = model_settings()
TestOutboxModel = OutboxModel.TestCase
