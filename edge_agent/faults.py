"""Deterministic crash points for the fault-injection suite (docs/reliability.md (c), T2).

``EDGE_AGENT_FAULT=<point>:<n>`` makes the daemon SIGKILL itself at the n-th time execution
passes ``hit(<point>)``, so a crash right after a COMMIT, a publish call, a PUBACK or right
before marking rows sent is reproducible in CI. Unset (production), ``hit`` is one dict lookup
on a None value: no counting, no cost worth measuring.

Points: ``crash_after_commit`` (readings committed, nothing published yet),
``crash_after_publish_call`` (handed to paho, maybe not on the wire),
``crash_after_puback`` (the broker has it, the queue does not know),
``crash_before_mark_sent`` (the writer is about to record the PUBACK).

``wedge_after_commit:<n>`` blocks the writer thread for good at the n-th pass through
``crash_after_commit`` instead (a hung thread, for the systemd watchdog: the VM lab's scenario
3). A foreign SQLite lock holder does not do that: the writer's commit gives up after the busy
timeout and retries, which counts as progress, so the watchdog keeps being pinged.
"""

from __future__ import annotations

import os
import signal
import threading

POINTS = frozenset(
    {
        "crash_after_commit",
        "crash_after_publish_call",
        "crash_after_puback",
        "crash_before_mark_sent",
        "wedge_after_commit",
    }
)
#: Wedge points and the crash point whose place they share.
WEDGES = {"wedge_after_commit": "crash_after_commit"}


def _parse(spec: str | None) -> tuple[str, int] | None:
    if not spec:
        return None
    point, _, n = spec.partition(":")
    if point not in POINTS or not n.isdigit() or int(n) < 1:
        msg = f"EDGE_AGENT_FAULT={spec!r}: expected <point>:<n> with point in {sorted(POINTS)}"
        raise ValueError(msg)
    return point, int(n)


_armed = _parse(os.environ.get("EDGE_AGENT_FAULT"))
_hits = [0]
_lock = threading.Lock()


def hit(point: str) -> None:
    """Count a pass through ``point``; SIGKILL the process (or block this thread for good,
    for a wedge point) at the armed hit."""
    if _armed is None or (_armed[0] != point and WEDGES.get(_armed[0]) != point):
        return
    with _lock:
        _hits[0] += 1
        fire = _hits[0] == _armed[1]
    if fire and _armed[0] in WEDGES:
        threading.Event().wait()
    if fire:
        os.kill(os.getpid(), signal.SIGKILL)
