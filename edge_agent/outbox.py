"""The store-and-forward queue: one SQLite file in WAL mode with ``synchronous=FULL``.

Rules (see README "Queue"):

* A reading is *accepted* once its row is COMMITted; its ``id`` (UUIDv7) and per-device ``seq``
  are assigned before the commit and never change, so every republish carries the same ones.
* A row leaves the pending set only when the broker PUBACKed it with a success reason code
  (``mark_sent``). Sent rows are retained for ``retain_sent_hours`` (for replay), then purged.
* Rows are read back in insertion order, which is per-device ``seq`` order.
* The queue is bounded by ``max_bytes`` of payload. At the bound, retained *sent* rows are
  purged first; if pending rows alone fill it, new readings are refused: their ``seq`` is still
  consumed (so the backend sees the gap), ``dropped`` is counted and persisted, and the caller
  raises an alarm. Committed rows are never evicted.

Only the writer thread (:mod:`edge_agent.writer`) writes; other threads read through
:mod:`edge_agent.queue_read` (re-exported here; WAL readers never block the writer).
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path

from edge_agent import faults
from edge_agent.errors import QueueError
from edge_agent.queue_read import (  # the read side, re-exported (see __all__)
    _DDL,
    COUNTERS,
    SCHEMA_VERSION,
    OutEvent,
    PendingRow,
    QueueStats,
    _connect,
    _runs,
    fetch_pending,
    fetch_range,
    fetch_rejected,
    max_n,
    note_refused,
    open_reader,
    peek,
    purge_sent,
    stats,
)  # fmt: skip
from edge_agent.reading import Capture, Identity, Reading, iso_utc, uuid7

__all__ = [
    "COUNTERS", "OutEvent", "Outbox", "PendingRow", "QueueStats", "fetch_pending", "fetch_range",
    "fetch_rejected", "max_n", "open_reader", "peek", "stats",
]  # fmt: skip


class Outbox:
    """The writer side of the queue. Not thread-safe: one thread owns it. ``queue_id``: this
    file's identity (a new file, a new id; its capture journal is its own).

    Args:
        path: SQLite file; its directory must exist and be writable.
        node: identity stamped into every reading.
        max_bytes: bound on stored payload bytes (pending + retained sent rows).
        retain_sent_s: how long sent rows are kept for replay, in seconds.
    """

    #: Rows deleted per purge transaction, so a purge never holds the write lock for long.
    PURGE_CHUNK = 5000

    def __init__(self, path: Path, node: Identity, max_bytes: int, retain_sent_s: float) -> None:
        self.path, self.node = path, node
        self.max_bytes, self.retain_sent_s = max_bytes, retain_sent_s
        self._con = _connect(path)
        self._seq: dict[str, int] = {}
        #: Devices whose readings are kept (for replay) but not published (station publish_raw).
        self.quiet_devices: set[str] = set()
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        #: The capture journal's marks the last commit stored, per device (edge_agent.journal).
        self.last_marks: dict[str, tuple[int, int]] = {}
        self._setup()

    def _setup(self) -> None:
        con = self._con
        try:
            mode = con.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            con.execute("PRAGMA synchronous=FULL")
            sync = con.execute("PRAGMA synchronous").fetchone()[0]
            check = con.execute("PRAGMA quick_check").fetchone()[0]
            con.executescript(_DDL)
            columns = {row[1] for row in con.execute("PRAGMA table_info(outbox)")}
            if "kind" not in columns:  # queue files from before station events
                con.execute("ALTER TABLE outbox ADD COLUMN kind TEXT NOT NULL DEFAULT 'reading'")
        except sqlite3.Error as err:
            msg = f"queue {self.path}: cannot initialise: {err}"
            raise QueueError(msg) from err
        if mode != "wal" or sync != 2 or check != "ok":
            msg = f"queue {self.path}: journal_mode={mode} synchronous={sync} quick_check={check}"
            raise QueueError(msg)
        con.execute("INSERT OR IGNORE INTO meta VALUES('schema', ?)", (SCHEMA_VERSION,))
        con.execute("INSERT OR IGNORE INTO meta VALUES('queue_id', ?)", (uuid.uuid4().hex,))
        self.queue_id = con.execute("SELECT value FROM meta WHERE key='queue_id'").fetchone()[0]
        self._seq = dict(con.execute("SELECT device, seq FROM device_seq").fetchall())
        self.counters.update(dict(con.execute("SELECT name, value FROM counters").fetchall()))

    @classmethod
    def for_maintenance(cls, path: Path) -> Outbox:
        """Open an existing queue for CLI maintenance while no daemon runs (purge)."""
        if not path.exists():
            msg = f"queue {path} does not exist"
            raise QueueError(msg)
        return cls(path, Identity("maintenance", "-", "-", "-"), 1 << 62, 0)

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self._con.close()

    def journal_marks(self) -> dict[str, tuple[int, int]]:
        """How far into each device's capture journal the queue has committed."""
        rows = self._con.execute("SELECT device, gen, offset FROM journal_mark").fetchall()
        return {device: (gen, offset) for device, gen, offset in rows}

    def last_seq(self, device: str) -> int:
        """The last seq given to ``device`` (0 if none)."""
        return self._seq.get(device, 0)

    def apply(
        self,
        captures: Sequence[Capture],
        sent: Iterable[int] = (),
        rejected: Iterable[tuple[int, int, str]] = (),
        events: Sequence[OutEvent] = (),
    ) -> tuple[list[tuple[int, Reading]], list[Reading]]:
        """One transaction: insert captures, mark sent/rejected rows. Returns (accepted, dropped).

        Raises:
            QueueError: SQLite failed; the transaction was rolled back and nothing changed.
        """
        seq_before, counters_before = dict(self._seq), dict(self.counters)
        con = self._con
        try:
            con.execute("BEGIN IMMEDIATE")
            sent = list(sent)
            if sent:
                faults.hit("crash_before_mark_sent")
            self._mark_sent(sent)
            self._mark_rejected(list(rejected))
            accepted, dropped = self._insert(captures)
            self._insert_events(events)
            marks = {c.device: c.mark for c in captures if c.mark is not None}
            self._save_state({c.device for c in captures} | {e.seq_key for e in events}, marks)
            con.execute("COMMIT")
            self.last_marks = marks
            if accepted:
                faults.hit("crash_after_commit")
        except sqlite3.Error as err:
            self._seq, self.counters = seq_before, counters_before
            if con.in_transaction:
                con.execute("ROLLBACK")
            msg = f"queue {self.path}: {err}"
            raise QueueError(msg) from err
        return accepted, dropped

    def _insert(
        self, captures: Sequence[Capture]
    ) -> tuple[list[tuple[int, Reading]], list[Reading]]:
        accepted: list[tuple[int, Reading]] = []
        dropped: list[Reading] = []
        rows = []
        for cap in captures:
            seq = self._seq.get(cap.device, 0) + 1
            self._seq[cap.device] = seq
            reading = Reading(uuid7(), seq, cap.device, cap, self.node)
            payload = reading.to_json()
            if not self._make_room(len(payload)):
                dropped.append(reading)
                continue
            sent = cap.wall_ns if cap.device in self.quiet_devices else None
            rows.append((reading.id, cap.device, seq, cap.wall_ns, payload, sent))
            accepted.append((0, reading))
            self.counters["bytes"] += len(payload)
        self.counters["dropped"] += len(dropped)
        note_refused(self._con, [(r.device, r.seq) for r in dropped])
        if not rows:
            return accepted, dropped
        self._con.executemany(
            "INSERT INTO outbox(id, device, seq, created_ns, payload, sent_ns) VALUES(?,?,?,?,?,?)",
            rows,
        )
        # AUTOINCREMENT: row numbers never go back, so one executemany gets consecutive ones
        last = self._con.execute("SELECT last_insert_rowid()").fetchone()[0]
        first = last - len(rows) + 1
        accepted = [(first + i, r) for i, (_, r) in enumerate(accepted)]
        quiet = sum(r[5] is not None for r in rows)
        self.counters["pending"] += len(rows) - quiet
        self.counters["accepted"] += len(rows)
        return accepted, dropped

    def _insert_events(self, events: Sequence[OutEvent]) -> None:
        """Station events are never refused at the bound: they are few and say what was lost."""
        rows = []
        for ev in events:
            key = ev.seq_key
            seq = self._seq.get(key, 0) + 1
            self._seq[key] = seq
            now = time.time_ns()
            body = {
                "schema": f"edge-agent/{ev.kind}/v1",
                "id": uuid7(),
                "seq": seq,
                "agent": self.node.agent,
                "site": self.node.site,
                "line": self.node.line,
                "station": ev.source,
                "ts": iso_utc(now),
                **ev.body,
            }
            payload = json.dumps(body, separators=(",", ":")).encode()
            rows.append((body["id"], ev.source, seq, ev.prio, now, payload, ev.kind))
            self.counters["bytes"] += len(payload)
        if rows:
            self._con.executemany(
                "INSERT INTO outbox(id, device, seq, prio, created_ns, payload, kind) "
                "VALUES(?,?,?,?,?,?,?)",
                rows,
            )
            self.counters["pending"] += len(rows)
            self.counters["accepted"] += len(rows)

    def _make_room(self, need: int) -> bool:
        if self.counters["bytes"] + need <= self.max_bytes:
            return True
        self._purge_sent(before_ns=None, limit=self.PURGE_CHUNK)
        return self.counters["bytes"] + need <= self.max_bytes

    def _mark_sent(self, ns: list[int]) -> None:
        if not ns:
            return
        now = time.time_ns()
        # PUBACKed rows come in runs of consecutive row numbers (one batch message each):
        # one range UPDATE per run instead of one per row.
        cur = self._con.executemany(
            "UPDATE outbox SET sent_ns=?, reject_rc=NULL "
            "WHERE n BETWEEN ? AND ? AND sent_ns IS NULL",
            [(now, lo, hi) for lo, hi in _runs(ns)],
        )
        self.counters["pending"] -= cur.rowcount
        self.counters["sent"] += cur.rowcount

    def _mark_rejected(self, rej: list[tuple[int, int, str]]) -> None:
        if not rej:
            return
        self._con.executemany(
            "UPDATE outbox SET reject_rc=?, reject_reason=?, attempts=attempts+1 "
            "WHERE n=? AND sent_ns IS NULL",
            [(rc, text, n) for n, rc, text in rej],
        )
        self.counters["rejected"] += len(rej)

    def _save_state(self, devices: set[str], marks: dict[str, tuple[int, int]]) -> None:
        if marks:  # in the transaction of the rows: a restart replays exactly what comes after
            self._con.executemany(
                "INSERT OR REPLACE INTO journal_mark VALUES(?,?,?)",
                [(d, gen, offset) for d, (gen, offset) in marks.items()],
            )
        self._con.executemany(
            "INSERT INTO device_seq VALUES(?,?) ON CONFLICT(device) DO UPDATE SET seq=excluded.seq",
            [(d, self._seq[d]) for d in devices],
        )
        self._con.executemany(
            "INSERT INTO counters VALUES(?,?) ON CONFLICT(name) DO UPDATE SET value=excluded.value",
            list(self.counters.items()),
        )

    def _purge_sent(self, before_ns: int | None, limit: int) -> int:
        return purge_sent(self._con, self.counters, before_ns, limit)

    def purge_sent_before(self, before_ns: int) -> int:
        """Delete every sent row sent before ``before_ns`` (chunked). Returns rows deleted."""
        total = 0
        while (deleted := self._purge_chunk(before_ns)) == self.PURGE_CHUNK:
            total += deleted
        return total + deleted

    def purge_expired(self) -> int:
        """Delete sent rows older than the retention (one chunk). Returns rows deleted."""
        return self._purge_chunk(time.time_ns() - int(self.retain_sent_s * 1e9))

    def _purge_chunk(self, before_ns: int) -> int:
        try:
            self._con.execute("BEGIN IMMEDIATE")
            deleted = self._purge_sent(before_ns, self.PURGE_CHUNK)
            self._save_state(set(), {})
            self._con.execute("COMMIT")
        except sqlite3.Error as err:
            if self._con.in_transaction:
                self._con.execute("ROLLBACK")
            msg = f"queue {self.path}: purge failed: {err}"
            raise QueueError(msg) from err
        return deleted
