"""Runs the stations inside the daemon: committed readings in, parcel/exception events out.

One thread owns every :class:`~edge_agent.station.Station` (they are not thread-safe). The
writer hands it each committed reading (non-blocking); the thread feeds the station the
reading's device belongs to, ticks every station every ``TICK_S`` so windows close on time
without new readings, and passes what comes out on: parcel and exception events to the
writer, committed to the durable queue with the same id/seq rules as readings: exceptions with
priority, so they leave ahead of any backlog; KPI snapshots are published retained.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

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


_Inbox = _Committed | _StateChanged


class StationRunner(threading.Thread):
    """Owner thread of the stations.

    Args:
        stations: station id -> Station.
        submit: where events go (the writer's ``submit_event``).
    """

    #: Seconds between ticks (window closing resolution).
    TICK_S = 0.02

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
        self.last_progress = time.monotonic()

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
        self.join(2.0)

    def run(self) -> None:
        """Dispatch readings and ticks until stopped."""
        while not self._stopping.is_set():
            try:
                self._dispatch(self._q.get(timeout=self.TICK_S))
                while True:
                    self._dispatch(self._q.get_nowait())
            except queue.Empty:
                pass
            now = time.monotonic_ns()
            for st in self.stations.values():
                self._emit(st.tick(now))
            self.last_progress = time.monotonic()

    def _dispatch(self, item: _Inbox) -> None:
        match item:
            case _Committed(reading):
                st = self.stations[self._owner[reading["device"]]]
                self._emit(st.feed(reading))
            case _StateChanged(device, state):
                st = self.stations[self._owner[device]]
                self._emit(st.device_state(device, state, time.monotonic_ns()))

    def _emit(self, events: list[StationEvent]) -> None:
        for ev in events:
            self.events[ev.kind] += 1
            self._submit(OutEvent(ev.kind, ev.station, ev.body, ev.priority))
