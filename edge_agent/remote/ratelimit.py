"""A token bucket: at most ``burst`` at once, refilled at ``rate`` per second."""

from __future__ import annotations

import time


class TokenBucket:
    """Not thread-safe: one thread (the command thread) takes from it."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self._t = time.monotonic()

    def take(self) -> bool:
        """One token if there is one (True), else False."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self._t) * self.rate)
        self._t = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False
