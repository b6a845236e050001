"""The writer thread: the only owner of the queue's write connection, committing in groups.

Device threads ``submit()`` captures; the publisher reports PUBACKs with ``mark_sent()``. The
thread takes everything waiting (up to ``MAX_BATCH``) into one transaction, so under load many
readings share one fsync, and at line rate each reading is committed within one fsync time.
After each commit it tells its listeners which readings were accepted (with their row numbers)
and which were dropped at the queue bound.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import structlog

from edge_agent.errors import QueueError
from edge_agent.queue import Outbox, OutEvent
from edge_agent.reading import Capture, Reading

log = structlog.get_logger(__name__)

Committed = Callable[[list[tuple[int, Reading]]], None]
Alarm = Callable[[str, dict[str, object]], None]


@dataclass
class _Batch:
    captures: list[Capture] = field(default_factory=list)
    events: list[OutEvent] = field(default_factory=list)
    sent: list[int] = field(default_factory=list)
    rejected: list[tuple[int, int, str]] = field(default_factory=list)
    synced: list[threading.Event] = field(default_factory=list)
    calls: list[tuple[Callable[[Outbox], object], Future[object]]] = field(default_factory=list)
    stop: bool = False


class Writer(threading.Thread):
    """Group-commit writer.

    Args:
        outbox: the queue, owned by this thread from ``start()`` on.
        on_commit: called after each commit with the accepted ``(row number, reading)`` pairs.
        on_alarm: called with an alarm name and details (queue bound hit, disk errors).
    """

    #: Most commands taken into one transaction.
    MAX_BATCH = 2000
    #: Captures waiting in RAM for a commit. Beyond this a device thread waits (backpressure:
    #: the bytes stay in the port's buffer) instead of piling readings up in memory.
    MAX_WAITING = 8_000
    #: How long a device thread waits for room before its capture is refused (counted).
    SUBMIT_WAIT_S = 2.0
    #: At most one overflow alarm per this many seconds (with the count since the last one).
    ALARM_EVERY_S = 1.0
    #: Seconds between purges of expired sent rows.
    PURGE_EVERY_S = 60.0
    #: Longest idle wait per loop, seconds: the loop proves it is alive this often (watchdog).
    IDLE_S = 0.25
    #: Seconds to wait before retrying a failed commit (disk full, I/O error).
    RETRY_S = 1.0

    def __init__(self, outbox: Outbox, on_commit: Committed, on_alarm: Alarm) -> None:
        super().__init__(name="queue-writer", daemon=True)
        self.outbox = outbox
        self._on_commit = on_commit
        self._on_alarm = on_alarm
        self._q: queue.SimpleQueue[tuple[str, object]] = queue.SimpleQueue()
        self.last_progress = time.monotonic()
        self.refused = 0
        self._room = threading.BoundedSemaphore(self.MAX_WAITING)
        self._alarmed_at = 0.0
        self._refused_alarmed = 0
        self.failing: str | None = None

    def submit(self, capture: Capture) -> bool:
        """Queue a capture for the next commit; waits while ``MAX_WAITING`` are queued.

        Returns False (counted, alarmed at most once a second) only if the writer made no
        room for ``SUBMIT_WAIT_S`` (a commit stuck on a full or failing disk).
        """
        if not self._room.acquire(timeout=self.SUBMIT_WAIT_S):
            self.refused += 1
            now = time.monotonic()
            if now - self._alarmed_at >= self.ALARM_EVERY_S:
                self._alarmed_at = now
                new, self._refused_alarmed = self.refused - self._refused_alarmed, self.refused
                log.error("writer_overflow", device=capture.device, refused=new, total=self.refused)
                self._on_alarm("writer_overflow", {"refused": new, "refused_total": self.refused})
            return False
        self._q.put(("cap", capture))
        return True

    def waiting(self) -> int:
        """Commands queued and not yet taken into a transaction."""
        return self._q.qsize()

    def submit_event(self, event: OutEvent) -> None:
        """Queue a station event (parcel, exception) for the next commit."""
        self._q.put(("evt", event))

    def mark_sent(self, rows: list[int]) -> None:
        """Rows PUBACKed with success: take them out of the pending set."""
        self._q.put(("sent", rows))

    def mark_rejected(self, rows: list[tuple[int, int, str]]) -> None:
        """Rows the broker refused (reason code >= 0x80): keep them, store why."""
        self._q.put(("rej", rows))

    def sync(self, timeout: float = 5.0) -> bool:
        """Wait until everything submitted before this call is committed. False on timeout."""
        done = threading.Event()
        self._q.put(("sync", done))
        return done.wait(timeout)

    def call(self, fn: Callable[[Outbox], object], timeout: float = 30.0) -> object:
        """Run ``fn(outbox)`` in the writer thread after the next commit; return its result.

        For maintenance that must not race the writer (``edge-agent queue purge``).
        """
        fut: Future[object] = Future()
        self._q.put(("call", (fn, fut)))
        return fut.result(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """Commit everything submitted so far, then end the thread."""
        self._q.put(("stop", None))
        self.join(timeout)

    def run(self) -> None:
        """Loop: collect a batch, commit it, notify; retry failed commits without losing them."""
        next_purge = time.monotonic() + self.PURGE_EVERY_S
        pending = _Batch()
        while True:
            self._collect(pending, timeout=self.IDLE_S if not self.failing else self.RETRY_S)
            if self._commit(pending):
                if pending.stop:
                    return
                pending = _Batch()
            elif pending.stop:
                log.error("queue_stop_uncommitted", captures=len(pending.captures))
                return
            else:
                time.sleep(self.RETRY_S)
            self.last_progress = time.monotonic()
            if time.monotonic() >= next_purge:
                next_purge = time.monotonic() + self.PURGE_EVERY_S
                self._purge()

    def _collect(self, batch: _Batch, timeout: float) -> None:
        try:
            item = self._q.get(timeout=timeout)
        except queue.Empty:
            return
        for _ in range(self.MAX_BATCH):
            kind, payload = item
            if kind == "cap":
                batch.captures.append(payload)  # type: ignore[arg-type]
                self._room.release()
            elif kind == "evt":
                batch.events.append(payload)  # type: ignore[arg-type]
            elif kind == "sent":
                batch.sent.extend(payload)  # type: ignore[arg-type]
            elif kind == "rej":
                batch.rejected.extend(payload)  # type: ignore[arg-type]
            elif kind == "sync":
                batch.synced.append(payload)  # type: ignore[arg-type]
            elif kind == "call":
                batch.calls.append(payload)  # type: ignore[arg-type]
            else:
                batch.stop = True
                return
            try:
                item = self._q.get_nowait()
            except queue.Empty:
                return

    def _commit(self, b: _Batch) -> bool:
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

    def _commit_batch(self, b: _Batch) -> bool:
        if not (b.captures or b.sent or b.rejected or b.events):
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
            log.info("queue_commit_recovered")
            self.failing = None
        if dropped:
            self._alarm_dropped(dropped)
        if accepted or b.events:
            self._on_commit(accepted)
        return True

    def _alarm_dropped(self, dropped: list[Reading]) -> None:
        details: dict[str, object] = {
            "dropped": len(dropped),
            "dropped_total": self.outbox.counters["dropped"],
            "max_bytes": self.outbox.max_bytes,
            "first": {"device": dropped[0].device, "seq": dropped[0].seq, "id": dropped[0].id},
            "last": {"device": dropped[-1].device, "seq": dropped[-1].seq, "id": dropped[-1].id},
        }
        log.error("queue_full_reading_dropped", **details)
        self._on_alarm("queue_full", details)

    def _purge(self) -> None:
        try:
            deleted = self.outbox.purge_expired()
        except QueueError as err:
            log.warning("queue_purge_failed", error=str(err))
            return
        if deleted:
            log.info("queue_purged_sent", rows=deleted)
