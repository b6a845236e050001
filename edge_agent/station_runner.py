"""Runs the stations inside the daemon: committed readings in, parcel/exception events out.

One thread owns every :class:`~edge_agent.station.Station` (they are not thread-safe). The
writer hands it each committed reading (non-blocking); the thread feeds the station the
reading's device belongs to, ticks every station every ``TICK_S`` while a passage is open so
windows close on time without new readings (and sleeps until the next KPI snapshot or reading
otherwise: an idle line wakes nobody), and passes what comes out on: parcel and exception
events to the writer, committed to the durable queue with the same id/seq rules as readings:
exceptions with priority, so they leave ahead of any backlog; KPI snapshots are published
retained.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from edge_agent.liveness import Liveness
from edge_agent.outbox import OutEvent
from edge_agent.station import Station, StationEvent

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class _Committed:
    """A committed reading (reading.v1 dict) of a station's device (from the writer)."""

    reading: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _StateChanged:
    """A station device's state changed (from its device thread)."""

    device: str
    state: str


@dataclass(frozen=True, slots=True)
class _Wake:
    """Wakes the thread (stop)."""


_Inbox = _Committed | _StateChanged | _Wake


class StationRunner(threading.Thread):
    """Owner thread of the stations.

    Args:
        stations: station id -> Station.
        submit: where events go (the writer's ``submit_event``).
    """

    #: Seconds between ticks while a passage is open (window closing resolution).
    TICK_S = 0.02
    #: Longest sleep with nothing open (s): bounds how late a stop is noticed.
    IDLE_S = 5.0

    def __init__(
        self,
        stations: dict[str, Station],
        submit: Callable[[OutEvent], None],
    ) -> None:
        super().__init__(name="stations", daemon=True)
        self.stations = stations
        self._submit = submit
        self._owner = {d: sid for sid, st in stations.items() for d in st.cfg.devices}
        self._q: queue.SimpleQueue[_Inbox] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self.events: dict[str, int] = {"parcel": 0, "exception": 0, "kpi": 0}
        #: Busy/idle marks for the watchdog (an idle station thread waits, healthy).
        self.live = Liveness(self)

    def devices(self) -> set[str]:
        """Every device that belongs to a station."""
        return set(self._owner)

    def feed(self, reading: dict[str, Any]) -> None:
        """A committed reading (reading.v1 dict); ignored unless its device is in a station."""
        if reading["device"] in self._owner:
            self._q.put(_Committed(reading))

    def device_state(self, device: str, state: str) -> None:
        """A device's state changed (device_offline exceptions)."""
        if device in self._owner:
            self._q.put(_StateChanged(device, state))

    def stop(self) -> None:
        """Close what can be closed and stop."""
        self._stopping.set()
        self._q.put(_Wake())
        self.join(2.0)

    def run(self) -> None:
        """Dispatch readings and ticks until stopped."""
        while not self._stopping.is_set():
            self.live.idle()
            try:
                item = self._q.get(timeout=self._wait_s())
                self.live.busy()
                self._dispatch(item)
                while True:
                    self._dispatch(self._q.get_nowait())
            except queue.Empty:
                self.live.busy()
            now = time.monotonic_ns()
            for st in self.stations.values():
                self._emit(st.tick(now))

    def _wait_s(self) -> float:
        """``TICK_S`` while a station has a passage open, else until its next KPI snapshot."""
        wait = self.IDLE_S
        now = time.monotonic_ns()
        for st in self.stations.values():
            due = st.next_tick_ns()
            if due is not None:
                wait = min(wait, max(self.TICK_S, (due - now) / 1e9))
        return wait

    def _dispatch(self, item: _Inbox) -> None:
        match item:
            case _Committed(reading):
                st = self.stations[self._owner[reading["device"]]]
                self._emit(st.feed(reading))
            case _StateChanged(device, state):
                st = self.stations[self._owner[device]]
                self._emit(st.device_state(device, state, time.monotonic_ns()))
            case _Wake():
                pass

    def _emit(self, events: list[StationEvent]) -> None:
        for ev in events:
            self.events[ev.kind] += 1
            self._submit(OutEvent(ev.kind, ev.station, ev.body, ev.priority))
