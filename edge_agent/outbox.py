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

Only the writer thread (:mod:`edge_agent.writer`) writes; other threads open their own
read connections with :func:`open_reader` (WAL readers never block the writer).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from edge_agent import faults
from edge_agent.errors import QueueError
from edge_agent.reading import Capture, Identity, Reading, iso_utc, uuid7

SCHEMA_VERSION = "1"

_DDL = """
CREATE TABLE IF NOT EXISTS outbox(
    n INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL,
    device TEXT NOT NULL,
    seq INTEGER NOT NULL,
    prio INTEGER NOT NULL DEFAULT 0,
    created_ns INTEGER NOT NULL,
    payload BLOB NOT NULL,
    sent_ns INTEGER,
    reject_rc INTEGER,
    reject_reason TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    kind TEXT NOT NULL DEFAULT 'reading'
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox(n) WHERE sent_ns IS NULL;
CREATE INDEX IF NOT EXISTS outbox_priority ON outbox(n) WHERE sent_ns IS NULL AND prio > 0;
CREATE INDEX IF NOT EXISTS outbox_sent ON outbox(sent_ns) WHERE sent_ns IS NOT NULL;
CREATE TABLE IF NOT EXISTS device_seq(device TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counters(name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS refused(device TEXT NOT NULL, seq_from INTEGER NOT NULL,
    seq_to INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS refused_device ON refused(device, seq_from);
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
"""

COUNTERS = ("bytes", "pending", "accepted", "sent", "dropped", "rejected")


@dataclass(frozen=True, slots=True)
class PendingRow:
    """A row handed to the publisher. ``device`` is the station id for station events."""

    n: int
    device: str
    payload: bytes
    kind: str = "reading"


@dataclass(frozen=True, slots=True)
class OutEvent:
    """A station event to commit: the writer adds id, seq, identity and time (schema <kind>.v1).

    Args:
        kind: ``parcel`` or ``exception`` (the topic and schema name).
        source: the station id (seq is counted per kind and station).
        body: the event's own fields.
        prio: 0 normal; > 0 goes out ahead of any backlog (exceptions).
    """

    kind: str
    source: str
    body: dict[str, object]
    prio: int = 0


@dataclass(frozen=True, slots=True)
class QueueStats:
    """Counters as persisted; ``oldest_pending_ns`` is the wall time of the oldest unsent row."""

    pending: int
    bytes: int
    accepted: int
    sent: int
    dropped: int
    rejected: int
    oldest_pending_ns: int | None


def _connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    uri = f"file:{path}?mode=ro" if readonly else f"file:{path}"
    try:
        con = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        con.execute("PRAGMA busy_timeout=5000")
    except sqlite3.Error as err:
        msg = f"cannot open queue {path}: {err}"
        raise QueueError(msg) from err
    return con


def open_reader(path: Path) -> sqlite3.Connection:
    """A read-only WAL connection for the publisher or the CLI (short transactions only)."""
    return _connect(path, readonly=True)


class Outbox:
    """The writer side of the queue. Not thread-safe: one thread owns it.

    Args:
        path: SQLite file; its directory must exist and be writable.
        node: identity stamped into every reading.
        max_bytes: bound on stored payload bytes (pending + retained sent rows).
        retain_sent_s: how long sent rows are kept for replay, in seconds.
    """

    #: Rows deleted per purge transaction, so a purge never holds the write lock for long.
    PURGE_CHUNK = 5000

    def __init__(self, path: Path, node: Identity, max_bytes: int, retain_sent_s: float) -> None:
        self.path = path
        self.node = node
        self.max_bytes = max_bytes
        self.retain_sent_s = retain_sent_s
        self._con = _connect(path)
        self._seq: dict[str, int] = {}
        #: Devices whose readings are kept (for replay) but not published (station publish_raw).
        self.quiet_devices: set[str] = set()
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
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
            self._save_state({c.device for c in captures} | {_seq_key(e) for e in events})
            con.execute("COMMIT")
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
        self._note_refused(dropped)
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

    def _note_refused(self, dropped: list[Reading]) -> None:
        """Seqs refused at the bound, as ranges: a remote ``resend`` says they never existed."""
        runs: list[list[object]] = []
        for r in dropped:
            if runs and runs[-1][0] == r.device and runs[-1][2] == r.seq - 1:
                runs[-1][2] = r.seq
            else:
                runs.append([r.device, r.seq, r.seq])
        self._con.executemany("INSERT INTO refused VALUES(?,?,?)", runs)

    def _insert_events(self, events: Sequence[OutEvent]) -> None:
        """Station events are never refused at the bound: they are few and say what was lost."""
        rows = []
        for ev in events:
            key = _seq_key(ev)
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

    def _save_state(self, devices: set[str]) -> None:
        self._con.executemany(
            "INSERT INTO device_seq VALUES(?,?) ON CONFLICT(device) DO UPDATE SET seq=excluded.seq",
            [(d, self._seq[d]) for d in devices],
        )
        self._con.executemany(
            "INSERT INTO counters VALUES(?,?) ON CONFLICT(name) DO UPDATE SET value=excluded.value",
            list(self.counters.items()),
        )

    def _purge_sent(self, before_ns: int | None, limit: int) -> int:
        cond = "sent_ns IS NOT NULL" + ("" if before_ns is None else " AND sent_ns < ?")
        args: tuple[int, ...] = () if before_ns is None else (before_ns,)
        row = self._con.execute(
            f"SELECT count(*), coalesce(sum(length(payload)), 0) FROM (SELECT payload FROM outbox "
            f"WHERE {cond} ORDER BY sent_ns LIMIT ?)",
            (*args, limit),
        ).fetchone()
        self._con.execute(
            f"DELETE FROM outbox WHERE n IN (SELECT n FROM outbox WHERE {cond} "
            "ORDER BY sent_ns LIMIT ?)",
            (*args, limit),
        )
        self.counters["bytes"] -= int(row[1])
        return int(row[0])

    def purge_sent_before(self, before_ns: int) -> int:
        """Delete every sent row sent before ``before_ns`` (chunked). Returns rows deleted."""
        total = 0
        while True:
            self._con.execute("BEGIN IMMEDIATE")
            try:
                deleted = self._purge_sent(before_ns, self.PURGE_CHUNK)
                self._save_state(set())
                self._con.execute("COMMIT")
            except sqlite3.Error as err:
                self._con.execute("ROLLBACK")
                msg = f"queue {self.path}: purge failed: {err}"
                raise QueueError(msg) from err
            total += deleted
            if deleted < self.PURGE_CHUNK:
                return total

    def purge_expired(self) -> int:
        """Delete sent rows older than the retention (one chunk). Returns rows deleted."""
        before = time.time_ns() - int(self.retain_sent_s * 1e9)
        try:
            self._con.execute("BEGIN IMMEDIATE")
            deleted = self._purge_sent(before, self.PURGE_CHUNK)
            self._save_state(set())
            self._con.execute("COMMIT")
        except sqlite3.Error as err:
            if self._con.in_transaction:
                self._con.execute("ROLLBACK")
            msg = f"queue {self.path}: purge failed: {err}"
            raise QueueError(msg) from err
        return deleted


def fetch_pending(
    con: sqlite3.Connection,
    after: int,
    limit: int,
    upto: int | None = None,
    *,
    priority: bool = False,
) -> list[PendingRow]:
    """Pending, not-rejected rows with ``after < n [<= upto]``, in insertion order.

    ``priority`` selects the rows with ``prio > 0`` (exceptions), else the ``prio = 0`` ones:
    the two sets are disjoint, so the publisher's cursors never hand out a row twice.
    """
    sql = "SELECT n, device, payload, kind FROM outbox WHERE sent_ns IS NULL AND n > ?"
    sql += " AND prio > 0" if priority else " AND prio = 0"
    args: tuple[int, ...] = (after,)
    if upto is not None:
        sql += " AND n <= ?"
        args += (upto,)
    rows = con.execute(sql + " AND reject_rc IS NULL ORDER BY n LIMIT ?", (*args, limit)).fetchall()
    return [PendingRow(n, dev, bytes(p), kind) for n, dev, p, kind in rows]


def fetch_rejected(con: sqlite3.Connection, limit: int) -> list[PendingRow]:
    """Rows the broker rejected, for the once-a-minute retry."""
    rows = con.execute(
        "SELECT n, device, payload, kind FROM outbox WHERE sent_ns IS NULL "
        "AND reject_rc IS NOT NULL ORDER BY n LIMIT ?",
        (limit,),
    ).fetchall()
    return [PendingRow(n, dev, bytes(p), kind) for n, dev, p, kind in rows]


def _runs(ns: list[int]) -> list[tuple[int, int]]:
    """Sorted, de-duplicated ``ns`` as inclusive ranges of consecutive numbers."""
    out: list[tuple[int, int]] = []
    for n in sorted(set(ns)):
        if out and n == out[-1][1] + 1:
            out[-1] = (out[-1][0], n)
        else:
            out.append((n, n))
    return out


def _seq_key(ev: OutEvent) -> str:
    return f"{ev.kind}:{ev.source}"


def max_n(con: sqlite3.Connection) -> int:
    """The highest row number ever used (0 for an empty queue)."""
    return int(con.execute("SELECT coalesce(max(n), 0) FROM outbox").fetchone()[0])


def fetch_range(
    con: sqlite3.Connection, since_ns: int, after: int, limit: int, device: str | None = None
) -> list[PendingRow]:
    """Rows (sent or not) created at or after ``since_ns``, for replay; paged by ``after``."""
    sql = "SELECT n, device, payload, kind FROM outbox WHERE n > ? AND created_ns >= ?"
    args: tuple[object, ...] = (after, since_ns)
    if device is not None:
        sql += " AND device = ?"
        args += (device,)
    rows = con.execute(sql + " ORDER BY n LIMIT ?", (*args, limit)).fetchall()
    return [PendingRow(n, dev, bytes(p), kind) for n, dev, p, kind in rows]


def peek(con: sqlite3.Connection, limit: int) -> list[tuple[int, str, int, str, int, bytes]]:
    """The next ``limit`` pending rows: (n, device, seq, id, created_ns, payload)."""
    rows = con.execute(
        "SELECT n, device, seq, id, created_ns, payload FROM outbox WHERE sent_ns IS NULL "
        "ORDER BY n LIMIT ?",
        (limit,),
    ).fetchall()
    return [(n, d, s, i, c, bytes(p)) for n, d, s, i, c, p in rows]


def stats(con: sqlite3.Connection) -> QueueStats:
    """Counters and the oldest pending row's time; cheap (indexed), safe while the daemon runs."""
    c = dict.fromkeys(COUNTERS, 0)
    c.update(dict(con.execute("SELECT name, value FROM counters").fetchall()))
    oldest = con.execute(
        "SELECT created_ns FROM outbox WHERE sent_ns IS NULL ORDER BY n LIMIT 1"
    ).fetchone()
    return QueueStats(
        pending=c["pending"],
        bytes=c["bytes"],
        accepted=c["accepted"],
        sent=c["sent"],
        dropped=c["dropped"],
        rejected=c["rejected"],
        oldest_pending_ns=None if oldest is None else int(oldest[0]),
    )
