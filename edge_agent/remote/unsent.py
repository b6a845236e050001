"""The ``oldest_unsent`` alarm: raised when the oldest unsent reading (or exception event, with
its own stricter threshold) is older than configured, cleared when the queue drains below it.

The operating manuals require exceptions to reach the backend within 10 minutes; an agent whose
broker is unreachable says so before that deadline passes, not only in its queue depth.
Checked on a timer of the daemon's main loop (:mod:`edge_agent.main_thread`: it sleeps until
:meth:`UnsentWatch.next_check`) every ``EVERY_S``, on a read-only connection of its own: ages
are reported in seconds against thresholds of minutes, so a few seconds is precise enough.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from edge_agent import outbox

log = structlog.get_logger(__name__)

Alarm = Callable[[str, dict[str, object]], None]

_OLDEST = "SELECT created_ns FROM outbox WHERE sent_ns IS NULL{} ORDER BY n LIMIT 1"


class UnsentWatch:
    """Args: the queue file, the two thresholds (s), where alarms go."""

    EVERY_S = 5.0

    def __init__(self, db: Path, reading_s: float, exception_s: float, alarm: Alarm) -> None:
        self.db = db
        self.limits = {"reading": reading_s, "exception": exception_s}
        self.alarm = alarm
        #: Age (s) of the oldest unsent row and of the oldest unsent exception (None: none).
        self.oldest_s: float | None = None
        self.oldest_exception_s: float | None = None
        #: Which alarms are raised now (``reading``, ``exception``).
        self.active: set[str] = set()
        self._next = 0.0
        self._con: sqlite3.Connection | None = None

    def next_check(self) -> float:
        """When :meth:`check` measures next (``time.monotonic()``)."""
        return self._next

    def check(self) -> None:
        """Every ``EVERY_S``: measure, raise or clear (the daemon's main loop)."""
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self.EVERY_S
        try:
            if self._con is None:
                self._con = outbox.open_reader(self.db)
            self.oldest_s = self._age(self._con, "")
            self.oldest_exception_s = self._age(self._con, " AND kind = 'exception'")
        except (sqlite3.Error, OSError) as err:
            log.warning("unsent_check_failed", error=str(err))
            return
        self._update("reading", self.oldest_s)
        self._update("exception", self.oldest_exception_s)

    @staticmethod
    def _age(con: sqlite3.Connection, cond: str) -> float | None:
        row = con.execute(_OLDEST.format(cond)).fetchone()
        return None if row is None else max(0.0, time.time() - row[0] / 1e9)

    def _update(self, kind: str, age: float | None) -> None:
        limit = self.limits[kind]
        details: dict[str, object] = {"kind": kind, "threshold_s": limit}
        if age is not None and age > limit and kind not in self.active:
            self.active.add(kind)
            log.error("oldest_unsent_alarm", age_s=round(age, 1), **details)
            self.alarm("oldest_unsent", {"state": "raised", "age_s": round(age, 1), **details})
        elif (age is None or age <= limit) and kind in self.active:
            self.active.discard(kind)
            log.info("oldest_unsent_cleared", **details)
            self.alarm("oldest_unsent", {"state": "cleared", **details})

    def status(self) -> dict[str, object]:
        """For ``edge-agent status`` and the metrics."""
        return {
            "oldest_unsent_s": self.oldest_s,
            "oldest_unsent_exception_s": self.oldest_exception_s,
            "alarms": sorted(self.active),
        }

    def close(self) -> None:
        """Close the read connection."""
        if self._con is not None:
            self._con.close()
