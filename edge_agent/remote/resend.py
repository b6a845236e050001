"""``resend``: which retained rows of a device to re-publish, and which part of the range is gone.

Read on the command side's own read-only connection (WAL readers never block the writer).
A seq missing from the queue is *refused* when the queue bound refused it (the ``refused``
table, written in the same transaction that consumed the seq), *unknown* when it was never
given (past the device's last seq, or below 1), and *purged* otherwise: a row that was sent and
deleted after ``retain_sent_hours`` (or to make room at the bound).
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from edge_agent.outbox import PendingRow
from edge_agent.remote.protocol import RequestError

_ROWS = "SELECT n, device, payload, kind, seq FROM outbox WHERE device = ? AND kind = 'reading' "


@dataclass(slots=True)
class Plan:
    """Rows to re-publish (queue order) and the gone ranges (``response.v1`` ``gone``)."""

    device: str
    rows: list[PendingRow] = field(default_factory=list)
    gone: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def _int(args: dict[str, Any], key: str) -> int:
    v = args.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise RequestError("bad_args", f"{key} must be an integer >= 1, got {v!r}")
    return v


def _ns(args: dict[str, Any], key: str) -> int:
    v = args.get(key)
    try:
        stamp = dt.datetime.fromisoformat(str(v).replace("Z", "+00:00"))
    except ValueError:
        raise RequestError("bad_args", f"{key} must be an ISO 8601 time, got {v!r}") from None
    if not isinstance(v, str) or stamp.tzinfo is None:
        raise RequestError("bad_args", f"{key} must be an ISO 8601 time with a zone, got {v!r}")
    return int(stamp.timestamp() * 1e9)


def plan(con: sqlite3.Connection, args: dict[str, Any], max_rows: int) -> Plan:
    """The plan for ``args`` (``device`` and ``seq_from``/``seq_to`` or ``ts_from``/``ts_to``).

    Raises:
        RequestError: ``bad_args`` (missing, mistyped, reversed, or over ``max_rows``).
    """
    device = args.get("device")
    if not isinstance(device, str) or not device:
        raise RequestError("bad_args", "device must be a device id")
    if "seq_from" in args or "seq_to" in args:
        lo, hi = _int(args, "seq_from"), _int(args, "seq_to")
        if hi < lo:
            raise RequestError("bad_args", f"seq_to {hi} is below seq_from {lo}")
        if hi - lo + 1 > max_rows:
            raise RequestError(
                "bad_args", f"{hi - lo + 1} seqs asked, at most {max_rows} per request: split it"
            )
        rows = con.execute(_ROWS + "AND seq BETWEEN ? AND ? ORDER BY n", (device, lo, hi))
        return _with_gone(con, device, rows.fetchall(), lo, hi)
    if "ts_from" in args or "ts_to" in args:
        t0, t1 = _ns(args, "ts_from"), _ns(args, "ts_to")
        if t1 < t0:
            raise RequestError("bad_args", "ts_to is before ts_from")
        found = con.execute(
            _ROWS + "AND created_ns BETWEEN ? AND ? ORDER BY n LIMIT ?",
            (device, t0, t1, max_rows + 1),
        ).fetchall()
        if len(found) > max_rows:
            raise RequestError("bad_args", f"over {max_rows} rows in that time range: split it")
        if not found:
            return Plan(device)
        p = _with_gone(con, device, found, found[0][4], found[-1][4])
        oldest = con.execute(
            "SELECT min(created_ns) FROM outbox WHERE device = ? AND kind = 'reading'", (device,)
        ).fetchone()[0]
        if oldest is not None and oldest > t0:
            p.extra["history_starts_ns"] = int(oldest)
        return p
    raise RequestError("bad_args", "give seq_from and seq_to, or ts_from and ts_to")


def _with_gone(
    con: sqlite3.Connection, device: str, found: list[tuple[Any, ...]], lo: int, hi: int
) -> Plan:
    p = Plan(device, [PendingRow(n, d, bytes(pl), k) for n, d, pl, k, _s in found])
    have = {int(r[4]) for r in found}
    row = con.execute("SELECT seq FROM device_seq WHERE device = ?", (device,)).fetchone()
    last = 0 if row is None else int(row[0])
    refused = con.execute(
        "SELECT seq_from, seq_to FROM refused WHERE device = ? AND seq_to >= ? AND seq_from <= ?",
        (device, lo, hi),
    ).fetchall()

    def reason(seq: int) -> str:
        if seq > last:
            return "unknown"
        if any(a <= seq <= b for a, b in refused):
            return "refused"
        return "purged"

    for seq in range(lo, hi + 1):
        if seq in have:
            continue
        why = reason(seq)
        g = p.gone[-1] if p.gone else None
        if g is not None and g["seq_to"] == seq - 1 and g["reason"] == why:
            g["seq_to"] = seq
        else:
            p.gone.append({"seq_from": seq, "seq_to": seq, "reason": why})
    return p
