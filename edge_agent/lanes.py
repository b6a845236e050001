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
  replay; already sent once), lowest priority, and never more than half the window, so a live
  reading arriving next finds a free slot. Each handed-in chunk may carry ``done(ok)``, called
  once every message it was split into is PUBACKed (ok) or given up on (:class:`Part`).

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


#: done(ok): a resend chunk's completion (the remote command thread counts what was sent).
Done = Callable[[bool], None]


class Part:
    """The completion of one resend chunk over the messages it was split into: ``done(ok)``
    runs once, when the chunk is sealed (all its messages handed to paho) and none is open."""

    def __init__(self, done: Done | None) -> None:
        self.done, self.open, self.ok, self.sealed = done, 0, True, False

    def finish(self, ok: bool) -> None:
        """One of its messages was PUBACKed (``ok``: with success) or given up on."""
        self.open -= 1
        self.ok &= ok
        self._maybe()

    def seal(self) -> None:
        """Every message of the chunk was handed to the client (or failed)."""
        self.sealed = True
        self._maybe()

    def _maybe(self) -> None:
        if self.sealed and self.open <= 0 and self.done is not None:
            done, self.done = self.done, None
            done(self.ok)


@dataclass(slots=True)
class Flight:
    """One message in flight: its rows, the lane they came from, when it was published; for
    the resend lane, the chunk it belongs to."""

    rows: list[int]
    lane: str
    sent_mono: float
    part: Part | None = None


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
        #: (rows, their part, the part's last chunk) waiting for the resend lane.
        self._resend: deque[tuple[list[PendingRow], Part, bool]] = deque()
        #: The resend chunk being sent (its messages are attached to it until sealed).
        self._part: Part | None = None
        self._part_last = False
        self._exhausted: set[str] = set()

    def restart(self, backlog_upto: int, *, carry: bool) -> None:
        """After a (re)connect (``carry``: what is in flight is carried) or a rewind: rows up
        to ``backlog_upto`` are backlog, later ones live; every lane from its start."""
        self.backlog_upto = backlog_upto
        self.cursor = {"priority": 0, "live": backlog_upto, "backlog": 0}
        self.carried = set(self.flying) if carry else set()
        self._exhausted.clear()
        if self._part is not None and not carry:  # a rewind while a chunk was being sent
            self._part.ok = False
        self._seal()

    def carrying(self) -> bool:
        """A message paho re-sent as the connection came up still waits for its PUBACK: the
        publisher sends nothing after it until then, so a broker that closes on it (Mosquitto
        after a denied PUBLISH) has nothing unread and closes with a FIN, not a reset that
        loses the PUBACK (the message was then re-sent at every reconnect, forever)."""
        return not self.carried.isdisjoint(self.flying)

    def full(self) -> bool:
        """No room for another message."""
        return len(self.inflight) >= self.size

    def resend(self, rows: list[PendingRow], done: Done | None = None) -> None:
        """Queue rows for the lowest lane (sent when the other lanes are empty, in messages of
        up to ``batch_max`` rows); ``done(ok)`` once all of them are PUBACKed or given up on."""
        part = Part(done)
        for i in range(0, len(rows), self.batch_max):
            last = i + self.batch_max >= len(rows)
            self._resend.append((rows[i : i + self.batch_max], part, last))
        if not rows:
            part.seal()
        self._exhausted.discard("resend")

    def resend_busy(self) -> int:
        """Messages of the resend lane in flight."""
        return sum(f.lane == "resend" for f in self.inflight.values())

    def next_rows(self) -> tuple[str, list[PendingRow]] | None:
        """The lane and rows to send next (rows may be empty when all were in flight: call
        again), or None when the window is full or every lane is empty. A lane found empty,
        or that returned less than asked, is not read again until :meth:`new_pass`."""
        self._seal()  # the rows last returned were sent (or failed)
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
            if not self._resend or self.resend_busy() >= max(1, self.size // 2):
                return None  # (an ack of a resend message makes room: the caller reads again)
            got, self._part, self._part_last = self._resend.popleft()
            return [r for r in got if r.n not in self.flying]
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
        part = self._part if lane == "resend" else None
        if part is not None:
            part.open += 1
        self.inflight[mid] = Flight(rows, lane, now, part)
        self.flying.update(rows)

    def acked(self, mid: int, ok: bool = True) -> Flight | None:
        """The PUBACK of ``mid`` came (``ok``: a success code): its flight, or None (not ours,
        or given up on). A resend message's chunk is told."""
        flight = self.inflight.pop(mid, None)
        if flight is not None:
            self.flying.difference_update(flight.rows)
            if flight.part is not None:
                flight.part.finish(ok)
        return flight

    def _seal(self) -> None:
        part, self._part = self._part, None
        if part is not None and self._part_last:
            part.seal()

    def next_expiry(self, timeout: float) -> float | None:
        """When the oldest message in flight times out (None: nothing in flight)."""
        oldest = next(iter(self.inflight.values()), None)
        return None if oldest is None else oldest.sent_mono + timeout

    def expire(self, now: float, timeout: float) -> int:
        """Drop messages in flight for longer than ``timeout``; returns how many (the caller
        rewinds when > 0, so their rows are fetched again)."""
        late = [mid for mid, f in self.inflight.items() if now - f.sent_mono > timeout]
        for mid in late:
            flight = self.inflight.pop(mid)
            self.flying.difference_update(flight.rows)
            if flight.part is not None:
                flight.part.finish(False)
        return len(late)
