"""What the writer thread's inbox carries, the batch it gathers for one transaction, and the
writer's own maintenance (purge) and alarm details."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from edge_agent.errors import QueueError
from edge_agent.outbox import Outbox, OutEvent
from edge_agent.reading import Capture, Reading

log = structlog.get_logger("edge_agent.writer")


@dataclass(frozen=True, slots=True)
class Sent:
    """Rows PUBACKed with success (from the publisher)."""

    rows: list[int]


@dataclass(frozen=True, slots=True)
class Rejected:
    """Rows the broker refused: (row, reason code, reason) (from the publisher)."""

    rows: list[tuple[int, int, str]]


@dataclass(frozen=True, slots=True)
class Sync:
    """Set ``done`` once everything queued before it is committed."""

    done: threading.Event


@dataclass(frozen=True, slots=True)
class Call:
    """Run ``fn(outbox)`` in the writer thread after the next commit (maintenance)."""

    fn: Callable[[Outbox], object]
    fut: Future[object]


@dataclass(frozen=True, slots=True)
class Stop:
    """Commit what is queued, then end the thread."""


#: What the writer's inbox carries: a device's capture, a station's event, or a command.
Inbox = Capture | OutEvent | Sent | Rejected | Sync | Call | Stop


class Marks:
    """PUBACK marks waiting for the writer's next commit (any thread adds, the writer takes).
    Only the first mark after a commit wakes the writer: later ones cost no wake-up."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: list[int] = []
        self._woken = False  # a wake-up for the marks is queued, or was taken and not committed

    #: Marks waiting for a commit that wake the writer again (bounds what a crash replays
    #: beyond the in-flight window: rows PUBACKed but not yet marked sent).
    WAKE_AT = 16

    def add(self, rows: list[int]) -> bool:
        """Add rows; True when the caller must wake the writer."""
        with self._lock:
            before = len(self._rows)
            self._rows.extend(rows)
            wake = not self._woken or before < self.WAKE_AT <= len(self._rows)
            self._woken = True
        return wake

    def take(self) -> list[int]:
        """The rows added since the last take (writer)."""
        with self._lock:
            rows, self._rows = self._rows, []
        return rows

    def committed(self) -> bool:
        """After a commit: True when marks came meanwhile (they wait for the next one)."""
        with self._lock:
            self._woken = bool(self._rows)
            return self._woken


@dataclass
class Batch:
    captures: list[Capture] = field(default_factory=list)
    events: list[OutEvent] = field(default_factory=list)
    sent: list[int] = field(default_factory=list)
    rejected: list[tuple[int, int, str]] = field(default_factory=list)
    synced: list[threading.Event] = field(default_factory=list)
    calls: list[tuple[Callable[[Outbox], object], Future[object]]] = field(default_factory=list)
    stop: bool = False

    def add(self, item: Inbox) -> bool:
        """Take a command or event (captures are the writer's: spill bound). True on stop."""
        match item:
            case OutEvent():
                self.events.append(item)
            case Sent(rows):
                self.sent.extend(rows)
            case Rejected(rows):
                self.rejected.extend(rows)
            case Sync(done):
                self.synced.append(done)
            case Call(fn, fut):
                self.calls.append((fn, fut))
            case Stop():
                self.stop = True
        return self.stop

    def urgent(self) -> bool:
        """Someone waits for this commit (sync, maintenance, stop): no gathering."""
        return bool(self.synced or self.calls or self.stop)

    def wants_commit(self) -> bool:
        """Anything but PUBACK marks (those may wait for the next commit)."""
        return bool(self.captures or self.events or self.urgent())


def purge_expired(outbox: Outbox) -> None:
    """Delete sent rows past their retention (a maintenance call of the writer's own)."""
    try:
        deleted = outbox.purge_expired()
    except QueueError as err:
        log.warning("queue_purge_failed", error=str(err))
        return
    if deleted:
        log.info("queue_purged_sent", rows=deleted)


def dropped_details(dropped: list[Reading], outbox: Outbox) -> dict[str, object]:
    """The ``queue_full`` alarm: how many readings the bound refused, which, the totals."""
    return {
        "dropped": len(dropped),
        "dropped_total": outbox.counters["dropped"],
        "max_bytes": outbox.max_bytes,
        "first": {"device": dropped[0].device, "seq": dropped[0].seq, "id": dropped[0].id},
        "last": {"device": dropped[-1].device, "seq": dropped[-1].seq, "id": dropped[-1].id},
    }


def free_bytes(where: Path) -> int | None:
    """Bytes an unprivileged writer may still use on the file system of ``where``."""
    try:
        st = os.statvfs(where)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def disk_state(
    where: Path,
    full: str | None,
    full_bytes: int,
    on_alarm: Callable[[str, dict[str, object]], None],
) -> str | None:
    """The queue disk after a look at its free space: ``"<n> bytes free on <dir>"`` once fewer
    than ``full_bytes`` are free (logged and alarmed once), None again once twice that is."""
    free = free_bytes(where)
    if free is None:
        return full
    if full is None and free < full_bytes:
        log.error("queue_disk_full", free_bytes=free, path=str(where))
        on_alarm("disk_full", {"free_bytes": free, "path": str(where)})
        return f"{free} bytes free on {where}"
    if full is not None and free >= 2 * full_bytes:
        log.info("queue_disk_space_back", free_bytes=free, path=str(where))
        return None
    return full
