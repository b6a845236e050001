"""Reconnect waits with jitter (issue 14): 30 agents that lose one broker at the same instant
come back spread out, not in one burst. Used by :meth:`edge_agent.mqtt_client._Client.note_failure`,
whose ``retry_at`` the publisher's loop (:mod:`edge_agent.broker_link`) waits for."""

from __future__ import annotations

import random

#: Seconds before the first reconnect attempt after a drop or a failed attempt (then doubling).
RECONNECT_MIN_S = 0.5
#: The first attempt after a drop comes at a random time in this window (s): 30 agents that
#: lose one broker at the same instant come back spread over it, not in one 100 ms window.
FIRST_RETRY_S = (0.1, 1.0)
#: ... and in this one when the broker closed the connection right after rejecting a publish
#: (Mosquitto 2.0 after a PUBACK 0x87): the alarm of that rejection must not wait (T17).
AFTER_REJECT_RETRY_S = (0.05, 0.3)


def jittered_delay(waits: int, max_delay: float, since_reject_s: float) -> float:
    """The wait before reconnect attempt ``waits + 1`` (s): the first in :data:`FIRST_RETRY_S`,
    then ``RECONNECT_MIN_S`` doubling, each stretched by a random 50-150 %; never over
    ``max_delay`` (``reconnect_max_s``), and spread over its upper half once capped."""
    if waits == 0:
        lo, hi = AFTER_REJECT_RETRY_S if since_reject_s < 2.0 else FIRST_RETRY_S
        delay = random.uniform(lo, hi)
    else:
        delay = min(RECONNECT_MIN_S * 2.0**waits, max_delay) * random.uniform(0.5, 1.5)
    return min(delay, max_delay * random.uniform(0.75, 1.0))
