"""A device thread's wake-up call: an eventfd its read waits on beside the port's fd.

A device thread sleeps in ``select`` on its port until bytes arrive or its next deadline (a
poll, a trigger, an open frame's inter-byte deadline, a watchdog). Whoever needs it sooner
(``DeviceWorker.stop()``, a device action through ``DeviceWorker.call()``) calls
:meth:`Waker.wake`: the fd becomes readable and the read returns at once. The thread calls
:meth:`Waker.clear` before it looks at its stop flag and its calls, so a wake that comes after
that look is never lost: it leaves the fd readable for the next read.
"""

from __future__ import annotations

import contextlib
import os
import threading


class Waker:
    """One eventfd, written by other threads, waited on and cleared by the device thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._set = False

    def fileno(self) -> int:
        """The fd to wait on (readable after :meth:`wake`); -1 once closed."""
        return self._fd

    def is_set(self) -> bool:
        """True from :meth:`wake` until the next :meth:`clear`."""
        return self._set

    def wake(self) -> None:
        """Make the fd readable (any thread). A no-op once closed: the fd number is not reused."""
        with self._lock:
            if self._fd >= 0:
                os.eventfd_write(self._fd, 1)
                self._set = True  # after the write: a clear() in between leaves both set

    def clear(self) -> None:
        """Forget past wakes (the device thread, before it checks what it was woken for).

        Without a wake since the last clear, no system call: a wake caught between its write
        and its flag leaves the fd readable, so the next read returns at once and clears it.
        """
        if not self._set:
            return
        self._set = False
        with contextlib.suppress(OSError):  # nothing pending (EAGAIN), or closed by this thread
            os.eventfd_read(self._fd)

    def close(self) -> None:
        """Close the fd (idempotent; the device thread, as it ends); later wakes do nothing."""
        with self._lock:
            fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)
