"""The writer thread: the only owner of the queue's write connection, committing in groups.

Device threads ``submit()`` captures; the publisher reports PUBACKs with ``mark_sent()``. The
thread takes everything waiting into one transaction: under load, what arrives while a commit
settles shares the next fsync (``gather_s``), a lone capture is committed at once, and PUBACK
marks ride along with the next commit (``MARK_DELAY_S``). A reading is acknowledged to nobody
before its commit. After each commit the listeners learn which readings were accepted (with
their row numbers) and which were dropped at the queue bound. Between deadlines (purge, disk
check, retry) the thread sleeps on its inbox: no idle tick (health: :mod:`edge_agent.liveness`).

When commits fail (disk full, I/O error; docs/reliability.md Q3, T7) the thread keeps looping: the
captures are held in RAM, at most ``SPILL_MAX`` of them, and the commit is retried every
``RETRY_S``. Once the spill is full, new captures are refused at once, so a device thread never
blocks on a disk that is known to be failing (a blocked thread lets the port's buffer overflow,
a loss nobody would count). Refusals are counted, alarmed (``writer_overflow``, at most once a
second, with the total) and added to the queue's persisted ``dropped`` counter with the next
commit that succeeds.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

import structlog

from edge_agent import writer_inbox as wi
from edge_agent.errors import QueueError
from edge_agent.liveness import Liveness
from edge_agent.outbox import Outbox, OutEvent
from edge_agent.reading import Capture, Reading
from edge_agent.writer_inbox import Batch

log = structlog.get_logger(__name__)

Committed = Callable[[list[tuple[int, Reading]]], None]
Alarm = Callable[[str, dict[str, object]], None]


class Writer(threading.Thread):
    """Group-commit writer. Args: the queue (owned by this thread from ``start()`` on), the
    listener called after each commit with the accepted ``(row number, reading)`` pairs, and
    the one called with an alarm name and details (queue bound hit, disk errors)."""

    #: Most commands taken into one transaction.
    MAX_BATCH = 2000
    #: Captures waiting in RAM for a commit. Beyond this a device thread waits (backpressure:
    #: the bytes stay in the port's buffer) instead of piling readings up in memory.
    MAX_WAITING = 8_000
    #: How long a device thread waits for room before its capture is refused (counted).
    SUBMIT_WAIT_S = 2.0
    #: Captures held in RAM while commits fail, committed once one succeeds. Beyond this new
    #: captures are refused at once. (The batch in hand when the first commit failed is kept
    #: whole, so the spill can reach ``MAX_BATCH`` if that batch was larger.)
    SPILL_MAX = 1_000
    #: At most one overflow alarm per this many seconds (with the count since the last one).
    ALARM_EVERY_S = 1.0
    #: Seconds between purges of expired sent rows.
    PURGE_EVERY_S = 60.0
    #: Under load (the last commit ended less than this ago, s), the next one waits until then
    #: so that what arrives meanwhile shares its fsync; a lone capture is committed at once.
    GATHER_S = 0.002  # ([queue] gather_ms)
    #: While captures flow (one was committed less than this ago, s), PUBACK marks wait for
    #: the next commit of captures, at most this long: they cost no fsync of their own. (A mark
    #: lost in a crash means a duplicate, never a loss.) Otherwise (a backlog drain) at once.
    MARK_DELAY_S = 0.05
    #: Seconds to wait before retrying a failed commit (disk full, I/O error).
    RETRY_S = 1.0
    #: Seconds between checks of the free space on the queue's disk (and while idle).
    DISK_CHECK_S, DISK_IDLE_CHECK_S = 0.5, 5.0
    #: Fewer free bytes than this is a full disk (alarm ``disk_full``, STATUS=), checked
    #: directly: SQLite goes on committing into WAL space it already owns, so its first
    #: SQLITE_FULL can come long after the disk filled up.
    DISK_FULL_BYTES = 64 * 1024

    def __init__(
        self, outbox: Outbox, on_commit: Committed, on_alarm: Alarm, gather_s: float = GATHER_S
    ) -> None:
        super().__init__(name="queue-writer", daemon=True)
        self.gather_s = gather_s
        self.outbox = outbox
        self._on_commit = on_commit
        self._on_alarm = on_alarm
        self._q: queue.SimpleQueue[wi.Inbox] = queue.SimpleQueue()
        self.live = Liveness(self)
        #: Called when ``failing`` or ``disk_full`` clears (STATUS= at once; alarms say the rest).
        self.on_change: Callable[[], None] = lambda: None
        self._room = threading.BoundedSemaphore(self.MAX_WAITING)
        self._count_lock = threading.Lock()
        self._marks = wi.Marks()
        #: The commit being announced stored rows with ``prio > 0`` (read in ``on_commit``).
        self.committed_prio = False
        #: Captures refused by this writer since start (device threads and the writer count).
        self.refused = 0
        self._refused_alarmed, self._refused_saved, self._alarmed_at = 0, 0, 0.0
        #: Why commits fail (the SQLite error), None while they succeed.
        self.failing: str | None = None
        #: Captures held in RAM because commits fail (and whether that spill is full).
        self.held, self._spill_full = 0, False
        #: "<n> bytes free on <dir>" while the queue's disk is full, else None.
        self.disk_full: str | None = None

    def submit(self, capture: Capture) -> bool:
        """Queue a capture for the next commit; waits while ``MAX_WAITING`` are queued. False
        (counted, alarmed at most once a second) at once while commits fail and the RAM spill
        is full, or if no room came for ``SUBMIT_WAIT_S`` (a commit stuck on a hung disk)."""
        if self._spill_full:
            self._refuse(capture.device)
            return False
        if not self._room.acquire(timeout=self.SUBMIT_WAIT_S):
            self._refuse(capture.device)
            return False
        self._q.put(capture)
        return True

    def _refuse(self, device: str | None) -> None:
        with self._count_lock:
            if device is not None:
                self.refused += 1
            new = self.refused - self._refused_alarmed
            now = time.monotonic()
            if not new or now - self._alarmed_at < self.ALARM_EVERY_S:
                return
            self._alarmed_at, self._refused_alarmed, total = now, self.refused, self.refused
        details: dict[str, object] = {"refused": new, "refused_total": total}
        details |= {"spill_max": self.SPILL_MAX, "failing": self.failing}
        log.error("writer_overflow", device=device, **details)
        self._on_alarm("writer_overflow", details)

    def waiting(self) -> int:
        """Commands queued and not yet taken into a transaction."""
        return self._q.qsize()

    def submit_event(self, event: OutEvent) -> None:
        """Queue a station event (parcel, exception) for the next commit."""
        self._q.put(event)

    def mark_sent(self, rows: list[int]) -> None:
        """Rows PUBACKed with success: take them out of the pending set. Only the first mark
        after a commit wakes the writer; later ones wait in a list for the next commit."""
        if self._marks.add(rows):
            self._q.put(wi.Sent([]))  # a wake-up: the rows wait in self._marks

    def mark_rejected(self, rows: list[tuple[int, int, str]]) -> None:
        """Rows the broker refused (reason code >= 0x80): keep them, store why."""
        self._q.put(wi.Rejected(rows))

    def sync(self, timeout: float = 5.0) -> bool:
        """Wait until everything submitted before this call is committed. False on timeout."""
        done = threading.Event()
        self._q.put(wi.Sync(done))
        return done.wait(timeout)

    def call(self, fn: Callable[[Outbox], object], timeout: float = 30.0) -> object:
        """Run ``fn(outbox)`` in the writer thread after the next commit; return its result
        (maintenance that must not race the writer: ``edge-agent queue purge``)."""
        fut: Future[object] = Future()
        self._q.put(wi.Call(fn, fut))
        return fut.result(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """Commit everything submitted so far, then end the thread."""
        self._q.put(wi.Stop())
        self.join(timeout)

    def run(self) -> None:
        """Loop: collect a batch, commit it, notify; retry failed commits without losing them."""
        now = time.monotonic()
        next_purge, next_disk, retry_at = now + self.PURGE_EVERY_S, now, now
        last_commit = captured = -1e9  # when the last commit (of captures) ended
        flowing = False  # the last commit stored captures: more are likely on their way
        marks_since: float | None = None  # when the oldest mark not yet committed came
        pending = Batch()
        while True:
            deadlines = [next_purge, next_disk + self.DISK_IDLE_CHECK_S - self.DISK_CHECK_S]
            if self.failing:
                deadlines.append(retry_at)
            if marks_since is not None:  # marks wait while captures flow (see below)
                deadlines.append(min(marks_since, captured) + self.MARK_DELAY_S)
            self.live.idle()
            if flowing and (rest := last_commit + self.gather_s - time.monotonic()) > 0:
                time.sleep(rest)  # under load: what comes meanwhile (marks too) costs no wake-up
            self._collect(pending, timeout=max(0.0, min(deadlines) - time.monotonic()))
            self.live.busy()
            now = time.monotonic()
            if pending.captures and now - last_commit < self.gather_s and not pending.urgent():
                time.sleep(last_commit + self.gather_s - now)  # shares the next commit
                self._collect(pending, timeout=None)
                now = time.monotonic()
            if now >= next_disk and (pending.captures or pending.events or now >= deadlines[1]):
                next_disk = now + self.DISK_CHECK_S
                self._check_disk()
            self._refuse(None)  # the alarm for refusals counted since the last one
            if now >= next_purge:
                next_purge = now + self.PURGE_EVERY_S
                pending.calls.append((wi.purge_expired, Future()))
            pending.sent.extend(self._marks.take())
            if (pending.sent or pending.rejected) and marks_since is None:
                marks_since = now
            held_for = 0.0 if marks_since is None else now - marks_since
            if not (pending.wants_commit() or self.failing) and (
                max(held_for, now - captured) < self.MARK_DELAY_S
                and len(pending.sent) < wi.Marks.WAKE_AT
            ):
                continue  # while captures flow, marks wait for their next commit
            if self.failing and now < retry_at and not pending.stop:
                continue
            if self._commit(pending):
                if pending.stop:
                    return
                flowing = bool(pending.captures)
                captured = time.monotonic() if flowing else captured
                pending = Batch()
                marks_since = time.monotonic() if self._marks.committed() else None
                self.held, self._spill_full = 0, False
            elif pending.stop:
                log.error("queue_stop_uncommitted", captures=len(pending.captures))
                return
            else:
                retry_at = time.monotonic() + self.RETRY_S
                self.held = len(pending.captures)
                self._spill_full = self.held >= self.SPILL_MAX
            last_commit = time.monotonic()

    def _collect(self, batch: Batch, timeout: float | None) -> None:
        """Take what waits; block up to ``timeout`` for the first item (None: do not block)."""
        try:
            item = self._q.get_nowait() if timeout is None else self._q.get(timeout=timeout)
        except queue.Empty:
            return
        for _ in range(self.MAX_BATCH):
            if isinstance(item, Capture):
                self._room.release()
                self._take(batch, item)
            elif batch.add(item):
                return  # stop: nothing after it
            try:
                item = self._q.get_nowait()
            except queue.Empty:
                return

    def _take(self, batch: Batch, capture: Capture) -> None:
        if self.failing and len(batch.captures) >= self.SPILL_MAX:
            self._spill_full = True
            self._refuse(capture.device)
            return
        batch.captures.append(capture)

    def _commit(self, b: Batch) -> bool:
        ok = self._commit_batch(b)
        if ok:
            for event in b.synced:
                event.set()
            for fn, fut in b.calls:
                try:
                    fut.set_result(fn(self.outbox))
                except Exception as err:
                    fut.set_exception(err)
        return ok

    def _commit_batch(self, b: Batch) -> bool:
        # refusals become part of the queue's persisted dropped counter with this commit
        # (a failed apply() keeps the in-RAM counters it started with, this addition included)
        unsaved = self.refused - self._refused_saved
        self.outbox.counters["dropped"] += unsaved
        self._refused_saved += unsaved
        if not (b.captures or b.sent or b.rejected or b.events or unsaved or self.failing):
            return True
        try:
            accepted, dropped = self.outbox.apply(b.captures, b.sent, b.rejected, b.events)
        except QueueError as err:
            if self.failing != str(err):
                log.error("queue_commit_failed", error=str(err), waiting=len(b.captures))
                self._on_alarm("queue_write_failed", {"error": str(err)})
            self.failing = str(err)
            return False
        if self.failing:
            log.info("queue_commit_recovered", committed=len(accepted), refused=self.refused)
            self.failing = None
            self.on_change()
        if dropped:
            details = wi.dropped_details(dropped, self.outbox)
            log.error("queue_full_reading_dropped", **details)
            self._on_alarm("queue_full", details)
        if accepted or b.events:
            self.committed_prio = any(e.prio > 0 for e in b.events)
            self._on_commit(accepted)
        return True

    def _check_disk(self) -> None:
        was = self.disk_full
        self.disk_full = wi.disk_state(
            self.outbox.path.parent, was, self.DISK_FULL_BYTES, self._on_alarm
        )
        if was is not None and self.disk_full is None:
            self.on_change()
