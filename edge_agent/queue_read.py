"""The read side of the queue: WAL reader connections and the queries the publisher, the CLI
and ``queue replay`` run on them (WAL readers never block the writer); the schema; and
:func:`purge_sent`, which the writer runs in its own transaction; the row and event types.
Re-exported by :mod:`edge_agent.outbox`."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from edge_agent.errors import QueueError

__all__ = [
    "COUNTERS", "OutEvent", "PendingRow", "QueueStats", "fetch_pending", "fetch_range",
    "fetch_rejected", "max_n", "open_reader", "peek", "stats",
]  # fmt: skip

COUNTERS = ("bytes", "pending", "accepted", "sent", "dropped", "rejected")

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
CREATE TABLE IF NOT EXISTS journal_mark(device TEXT PRIMARY KEY, gen INTEGER NOT NULL,
    offset INTEGER NOT NULL) WITHOUT ROWID;
"""


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

    @property
    def seq_key(self) -> str:
        """Events count their ``seq`` per kind and station."""
        return f"{self.kind}:{self.source}"


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


def _runs(ns: list[int]) -> list[tuple[int, int]]:
    """Sorted, de-duplicated ``ns`` as inclusive ranges of consecutive numbers."""
    out: list[tuple[int, int]] = []
    for n in sorted(set(ns)):
        if out and n == out[-1][1] + 1:
            out[-1] = (out[-1][0], n)
        else:
            out.append((n, n))
    return out


def note_refused(con: sqlite3.Connection, refused: list[tuple[str, int]]) -> None:
    """Store (device, seq) refused at the bound as ranges, in the writer's transaction: a
    remote ``resend`` then says they never existed."""
    runs: list[list[object]] = []
    for device, seq in refused:
        if runs and runs[-1][0] == device and runs[-1][2] == seq - 1:
            runs[-1][2] = seq
        else:
            runs.append([device, seq, seq])
    if runs:
        con.executemany("INSERT INTO refused VALUES(?,?,?)", runs)


def purge_sent(
    con: sqlite3.Connection, counters: dict[str, int], before_ns: int | None, limit: int
) -> int:
    """Delete up to ``limit`` sent rows (sent before ``before_ns``), oldest first, inside the
    caller's transaction (the writer's: the one write here); ``counters["bytes"]`` follows."""
    cond = "sent_ns IS NOT NULL" + ("" if before_ns is None else " AND sent_ns < ?")
    args: tuple[int, ...] = () if before_ns is None else (before_ns,)
    row = con.execute(
        f"SELECT count(*), coalesce(sum(length(payload)), 0) FROM (SELECT payload FROM outbox "
        f"WHERE {cond} ORDER BY sent_ns LIMIT ?)",
        (*args, limit),
    ).fetchone()
    con.execute(
        f"DELETE FROM outbox WHERE n IN (SELECT n FROM outbox WHERE {cond} "
        "ORDER BY sent_ns LIMIT ?)",
        (*args, limit),
    )
    counters["bytes"] -= int(row[1])
    return int(row[0])
