"""One daemon per queue: an exclusive ``flock`` on ``<queue>.lock``, beside the queue file.

Two processes writing one queue give duplicate ``(device, seq)`` pairs under different ids and
corrupt the persisted counters, so the daemon takes this lock *before* it opens the queue or
connects anywhere, and every CLI command that writes the queue without the daemon (``queue
purge`` when no daemon answers) takes it too. The kernel drops the lock with the process, so
a daemon killed with SIGKILL never leaves a stale lock behind; the file itself stays and only
carries the pid of the last holder, for the message a second instance prints.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from edge_agent.errors import EdgeAgentError

EX_LOCKED = 73
"""Exit code of a daemon refused because another one holds its queue or control socket.

The unit lists it in ``RestartPreventExitStatus=``: restarting cannot free the lock, only
stopping the other process can.
"""


class AlreadyRunningError(EdgeAgentError):
    """Another live process holds the queue (or answers on the control socket)."""

    def __init__(self, what: Path, pid: int | None, hint: str) -> None:
        who = f"another edge-agent (pid {pid})" if pid else "another edge-agent"
        super().__init__(f"{who} holds {what}; {hint}")
        self.pid = pid
        self.what = what


def lock_path(queue_path: Path) -> Path:
    """``/var/lib/edge-agent/queue.db`` -> ``/var/lib/edge-agent/queue.db.lock``."""
    return queue_path.with_name(queue_path.name + ".lock")


class QueueLock:
    """The held lock; :meth:`release` (or process exit) frees it."""

    def __init__(self, fd: int, path: Path) -> None:
        self._fd: int | None = fd
        self.path = path

    def release(self) -> None:
        """Unlock and close (idempotent). The lock file stays: unlinking it would race."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the only descriptor drops the flock

    def __enter__(self) -> QueueLock:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()


STOP_HINT = "stop it first (systemctl stop edge-agent)"


def acquire(queue_path: Path, hint: str = STOP_HINT, *, record_pid: bool = True) -> QueueLock:
    """Take the queue's lock without waiting. Raises :class:`AlreadyRunningError` if it is held.

    ``hint`` ends the message a refused caller prints; ``record_pid`` writes our pid into the
    lock file for that message (a mere probe does not)."""
    path = lock_path(queue_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        writable = True
    except PermissionError:  # a lock file left by another user: flock works read-only too
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        writable = False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = holder(queue_path)
        os.close(fd)
        raise AlreadyRunningError(queue_path, pid, hint) from None
    if writable and record_pid:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return QueueLock(fd, path)


def holder(queue_path: Path) -> int | None:
    """The pid written by the last holder of the lock (None if unknown). Does not lock."""
    with contextlib.suppress(OSError, ValueError):
        return int(lock_path(queue_path).read_text().split()[0])
    return None


def is_held(queue_path: Path) -> bool:
    """True while some process holds the queue's lock (probes without keeping it)."""
    try:
        lock = acquire(queue_path, record_pid=False)
    except AlreadyRunningError:
        return True
    except OSError:
        return False
    lock.release()
    return False
