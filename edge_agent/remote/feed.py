"""The resend lane's feeder and the publisher seams the command side uses (:class:`Port`).

A resend never queues more than ``RESEND_WINDOW`` messages at the publisher: each completion
(PUBACK, or given up) lets the next one go, so a large resend holds little memory and the
publisher's lane stays short behind live traffic.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

from edge_agent.messages import Message, fit, messages
from edge_agent.remote.resend import Plan
from edge_agent.topics import Topics

Done = Callable[[bool], None]


class Port(Protocol):
    """What the command side needs from the publisher (its seams)."""

    #: The broker's MQTT 5 Maximum Packet Size (None: not given); resent batches fit in it.
    broker_max_packet: int | None

    def respond(self, topic: str, payload: bytes, correlation: bytes | None) -> None:
        """Publish a response (QoS 1), Correlation Data echoed as an MQTT 5 property."""

    def resend(self, message: Message, done: Done) -> None:
        """Queue ``message`` on the resend lane; ``done(ok)`` runs on its PUBACK or give-up."""

    def pause_commands(self, seconds: float) -> None:
        """Unsubscribe from ``{base}/cmd/#`` for ``seconds`` (a flood), then subscribe again."""

    def alarm(self, name: str, details: dict[str, object]) -> None:
        """Publish an alarm event."""


#: Resend messages handed to the publisher at once (each up to ``batch_max`` readings).
RESEND_WINDOW = 4
#: A resend answers with what was PUBACKed after this long (``complete: false``).
RESEND_TIMEOUT_S = 300.0


def feed(p: Plan, port: Port, topics: Topics, batch_max: int) -> tuple[int, bool]:
    """Hand ``p``'s rows to the publisher's resend lane, ``RESEND_WINDOW`` messages at a time
    (batches of ``batch_max``, split to the broker's packet size). Returns (rows PUBACKed,
    complete)."""
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
        chunk = messages(p.rows[i : i + batch_max], topics)
        for m in fit(chunk, topics, port.broker_max_packet):
            if not window.acquire(timeout=max(0.0, deadline - time.monotonic())):
                return acked[0], False
            port.resend(m, done_for(len(m.rows)))
    for _ in range(RESEND_WINDOW):  # wait for the last ones
        if not window.acquire(timeout=max(0.0, deadline - time.monotonic())):
            return acked[0], False
    return acked[0], acked[0] == len(p.rows)
