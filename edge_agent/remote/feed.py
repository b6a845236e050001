"""The resend lane's feeder and the publisher seams the command side uses (:class:`Port`).

A resend never queues more than ``RESEND_WINDOW`` chunks (of ``batch_max`` rows) at the
publisher: each completion (every message of the chunk PUBACKed, or given up) lets the next one
go, so a large resend holds little memory and the publisher's resend lane
(:mod:`edge_agent.lanes`, lowest, at most half the window) stays short behind live traffic.
The publisher splits each chunk into messages (events on their own topics, batches to the
broker's Maximum Packet Size).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

from edge_agent.outbox import PendingRow
from edge_agent.remote.resend import Plan

Done = Callable[[bool], None]


class Port(Protocol):
    """What the command side needs from the publisher (its seams)."""

    def respond(self, topic: str, payload: bytes, correlation: bytes | None) -> None:
        """Publish a response (QoS 1), Correlation Data echoed as an MQTT 5 property."""

    def resend(self, rows: list[PendingRow], done: Done) -> None:
        """Queue ``rows`` on the resend lane; ``done(ok)`` once all are PUBACKed or given up."""

    def pause_commands(self, seconds: float) -> None:
        """Unsubscribe from ``{base}/cmd/#`` for ``seconds`` (a flood), then subscribe again."""

    def alarm(self, name: str, details: dict[str, object]) -> None:
        """Publish an alarm event."""


#: Resend chunks handed to the publisher at once (each up to ``batch_max`` rows).
RESEND_WINDOW = 4
#: A resend answers with what was PUBACKed after this long (``complete: false``).
RESEND_TIMEOUT_S = 300.0


def feed(p: Plan, port: Port, batch_max: int) -> tuple[int, bool]:
    """Hand ``p``'s rows to the publisher's resend lane, ``RESEND_WINDOW`` chunks of
    ``batch_max`` rows at a time. Returns (rows PUBACKed, complete)."""
    window = threading.Semaphore(RESEND_WINDOW)
    lock = threading.Lock()
    acked = [0]
    deadline = time.monotonic() + RESEND_TIMEOUT_S

    def done_for(n: int) -> Done:
        def done(ok: bool) -> None:
            if ok:
                with lock:
                    acked[0] += n
            window.release()

        return done

    for i in range(0, len(p.rows), batch_max):
        chunk = p.rows[i : i + batch_max]
        if not window.acquire(timeout=max(0.0, deadline - time.monotonic())):
            return acked[0], False
        port.resend(chunk, done_for(len(chunk)))
    for _ in range(RESEND_WINDOW):  # wait for the last ones
        if not window.acquire(timeout=max(0.0, deadline - time.monotonic())):
            return acked[0], False
    return acked[0], acked[0] == len(p.rows)
