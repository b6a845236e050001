"""What the publisher sends besides queued rows: alarms, retained KPI snapshots, device states.

Other threads post them (:meth:`SideMessages.post`); the publisher's thread takes them
(:meth:`SideMessages.take`). Alarms are kept in RAM while disconnected (the last ``backlog``
of them) and sent once connected; the latest state of each device is re-sent after every
reconnect (retained). Best effort: none of this is in the queue.
"""

from __future__ import annotations

import queue
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

#: publish(topic, payload, retain) in the publisher's thread.
Publish = Callable[[str, bytes, bool], object]


@dataclass(frozen=True, slots=True)
class Side:
    """An alarm, KPI snapshot or device state to publish."""

    topic: str
    payload: bytes
    retain: bool
    device: str | None = None  # a device's retained state: the latest is re-sent on reconnect


class SideMessages:
    """The publisher's side-message inbox and what it keeps while disconnected.

    Args:
        backlog: alarms (and snapshots) kept while disconnected; older ones are dropped.
    """

    def __init__(self, backlog: int) -> None:
        self._inbox: queue.SimpleQueue[Side] = queue.SimpleQueue()
        self._held: deque[Side] = deque(maxlen=backlog)
        self._states: dict[str, Side] = {}

    def post(self, side: Side) -> None:
        """Queue a side message (any thread)."""
        self._inbox.put(side)

    def take(self, connected: bool, publish: Publish) -> None:
        """Take what was posted: send it now if ``connected``, else keep it (publisher)."""
        while True:
            try:
                side = self._inbox.get_nowait()
            except queue.Empty:
                break
            if side.device is not None:
                self._states[side.device] = side
                if connected:
                    publish(side.topic, side.payload, True)
            else:
                self._held.append(side)
        self.flush(connected, publish)

    def flush(self, connected: bool, publish: Publish) -> None:
        """Send the alarms kept while disconnected (publisher, once connected)."""
        while connected and self._held:
            side = self._held.popleft()
            publish(side.topic, side.payload, side.retain)

    def resend_states(self, publish: Publish) -> None:
        """After a reconnect: every device's latest state again, then the kept alarms."""
        for side in self._states.values():
            publish(side.topic, side.payload, True)
        self.flush(True, publish)
