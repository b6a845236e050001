"""Which queued rows go to the broker next: the publisher's window, cursors and lanes.

Pure bookkeeping, no I/O: rows are read through the ``fetch`` function it is given and time
is passed in, so it is tested without a broker or a thread (tests/test_lanes.py).

Lanes, highest first; the window (``size`` messages in flight) is filled from the first lane
that has rows:

* ``priority``: rows stored with ``prio > 0`` (station exceptions), one per message, ahead of
  everything.
* ``live``: rows committed since the last (re)connect, or in the ``LIVE_S`` seconds before it
  (:class:`Recent`), so a reading taken while the link came up does not wait behind hours of
  backlog (T6). Batched up to ``batch_max`` when several are ready.
* ``backlog``: rows committed before that, in batches of up to ``batch_max``.
* ``resend``: rows handed in with :meth:`Window.resend` (a remote command asking for a
  replay), lowest priority.

Each lane is sent in queue order (per-device ``seq`` order). A row in flight is never fetched
twice; rows in flight when the connection came up (``carried``: paho re-sends them itself,
P6) are kept out of every fetch until the backlog pass is over. A message with no PUBACK
after ``ACK_TIMEOUT_S`` is dropped from the window and the cursors rewound (:meth:`expire`).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from edge_agent.outbox import PendingRow

#: fetch(after, limit, upto, priority): pending rows with ``after < n <= upto`` in ``n`` order.
Fetch = Callable[[int, int, int | None, bool], list[PendingRow]]

#: The lanes, highest priority first.
LANES = ("priority", "live", "backlog", "resend")


@dataclass(slots=True)
class Flight:
    """One message in flight: its rows, the lane they came from, when it was published."""

    rows: list[int]
    lane: str
    sent_mono: float


class Recent:
    """First row numbers of recent commits, for the live/backlog split (thread-safe: the
    writer's thread records, the publisher's reads).

    Args:
        live_s: rows committed this recently (seconds) are live after a (re)connect.
    """

    def __init__(self, live_s: float) -> None:
        self.live_s = live_s
        self._commits: deque[tuple[float, int]] = deque()
        self._lock = threading.Lock()

    def record(self, now: float, first_n: int) -> None:
        """Rows from ``first_n`` on were committed at ``now``."""
        with self._lock:
            self._commits.append((now, first_n))
            self._forget(now)

    def split(self, now: float, top: int) -> int:
        """Row number up to which pending rows are backlog (``top``: the last row stored)."""
        with self._lock:
            self._forget(now)
            return min(top, self._commits[0][1] - 1) if self._commits else top

    def _forget(self, now: float) -> None:
        while self._commits and now - self._commits[0][0] > self.live_s:
            self._commits.popleft()


class Window:
    """The in-flight window and the lane cursors.

    Args:
        size: most messages in flight.
        batch_max: most rows per message (live, backlog and resend lanes).
        fetch: reads pending rows (see :data:`Fetch`).
    """

    def __init__(self, size: int, batch_max: int, fetch: Fetch) -> None:
        self.size = size
        self.batch_max = batch_max
        self.fetch = fetch
        #: message id -> its flight, in publish order.
        self.inflight: dict[int, Flight] = {}
        #: Every row in flight.
        self.flying: set[int] = set()
        #: Rows in flight when the connection came up: kept out of fetches (see module doc).
        self.carried: set[int] = set()
        self.cursor = {"priority": 0, "live": 0, "backlog": 0}
        self.backlog_upto = 0
        self._resend: deque[PendingRow] = deque()
        self._exhausted: set[str] = set()

    def restart(self, backlog_upto: int, *, carry: bool) -> None:
        """After a (re)connect (``carry``: what is in flight is carried) or a rewind: rows up
        to ``backlog_upto`` are backlog, later ones live; every lane from its start."""
        self.backlog_upto = backlog_upto
        self.cursor = {"priority": 0, "live": backlog_upto, "backlog": 0}
        self.carried = set(self.flying) if carry else set()
        self._exhausted.clear()

    def full(self) -> bool:
        """No room for another message."""
        return len(self.inflight) >= self.size

    def resend(self, rows: list[PendingRow]) -> None:
        """Queue rows for the lowest lane (sent when the other lanes are empty)."""
        self._resend.extend(rows)
        self._exhausted.discard("resend")

    def next_rows(self) -> tuple[str, list[PendingRow]] | None:
        """The lane and rows to send next (rows may be empty when all were in flight: call
        again), or None when the window is full or every lane is empty. A lane found empty,
        or that returned less than asked, is not read again until :meth:`new_pass`."""
        if self.full():
            return None
        for lane in LANES:
            if lane in self._exhausted:
                continue
            rows = self._take(lane)
            if rows is not None:
                return lane, rows
            self._exhausted.add(lane)
        return None

    def new_pass(self, *, prio: bool = True) -> None:
        """Rows may have been committed (or handed in) since the last pass: read every lane
        again (the priority lane, found empty, only if ``prio``: rows with prio > 0 came)."""
        skip = not prio and "priority" in self._exhausted
        self._exhausted.clear()
        if skip:
            self._exhausted.add("priority")

    def _take(self, lane: str) -> list[PendingRow] | None:
        if lane == "resend":
            got = [self._resend.popleft() for _ in range(min(self.batch_max, len(self._resend)))]
            return [r for r in got if r.n not in self.flying] if got else None
        upto: int | None = None
        if lane == "backlog":
            if self.cursor["backlog"] >= self.backlog_upto:
                self.carried.clear()  # the backlog pass is over
                return None
            upto = self.backlog_upto
        prio = lane == "priority"
        limit = 1 if prio else self.batch_max
        rows = self.fetch(self.cursor[lane], limit, upto, prio)
        if not rows:
            if lane == "backlog":
                self.cursor["backlog"] = self.backlog_upto
            return None
        if len(rows) < limit and lane == "live":
            self._exhausted.add(lane)  # the rest of the live rows was in this fetch
        self.cursor[lane] = rows[-1].n
        return [r for r in rows if r.n not in self.flying and r.n not in self.carried]

    def sent(self, mid: int, rows: list[int], lane: str, now: float) -> None:
        """Message ``mid`` carrying ``rows`` was handed to the client."""
        self.inflight[mid] = Flight(rows, lane, now)
        self.flying.update(rows)

    def acked(self, mid: int) -> Flight | None:
        """The PUBACK of ``mid`` came: its flight, or None (not ours, or given up on)."""
        flight = self.inflight.pop(mid, None)
        if flight is not None:
            self.flying.difference_update(flight.rows)
        return flight

    def next_expiry(self, timeout: float) -> float | None:
        """When the oldest message in flight times out (None: nothing in flight)."""
        oldest = next(iter(self.inflight.values()), None)
        return None if oldest is None else oldest.sent_mono + timeout

    def expire(self, now: float, timeout: float) -> int:
        """Drop messages in flight for longer than ``timeout``; returns how many (the caller
        rewinds when > 0, so their rows are fetched again)."""
        late = [mid for mid, f in self.inflight.items() if now - f.sent_mono > timeout]
        for mid in late:
            self.flying.difference_update(self.inflight.pop(mid).rows)
        return len(late)
