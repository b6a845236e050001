"""Is a pipeline thread stuck? Measured by how long it has been busy, not by how often it ticks.

A thread that waits for work (its inbox) is healthy however long it waits, so it needs no idle
tick to prove it is alive (docs/reliability.md (g)): the watchdog then costs no wake-ups at
idle. A thread that took work and has not gone back to waiting within the window (a commit
stuck on a held lock or a hung disk, a callback that never returns) is not.
"""

from __future__ import annotations

import threading
import time


class Liveness:
    """Busy/idle marks of one thread, read by the main thread for the watchdog.

    Args:
        thread: the thread whose marks these are.
    """

    def __init__(self, thread: threading.Thread) -> None:
        self._thread = thread
        #: ``time.monotonic()`` when the thread took work; None while it waits for work.
        self._busy_since: float | None = None
        #: Seconds of busy time that are expected (a blocking connect: its timeout).
        self._allow = 0.0
        #: When the thread last finished a piece of work (status, tests).
        self.last_progress = time.monotonic()

    def busy(self, allow_s: float = 0.0) -> None:
        """The thread took work; ``allow_s`` more seconds than the window are expected."""
        self._busy_since, self._allow = time.monotonic(), allow_s

    def idle(self) -> None:
        """The thread finished its work and goes back to waiting."""
        self._busy_since = None
        self.last_progress = time.monotonic()

    def healthy(self, window: float) -> bool:
        """Alive, and not busy with one piece of work for longer than ``window`` seconds."""
        since = self._busy_since
        if not self._thread.is_alive():
            return False
        return since is None or time.monotonic() - since < window + self._allow
