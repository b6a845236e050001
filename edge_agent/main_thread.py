"""The main thread's loop: the systemd watchdog, STATUS=, reload; no polling.

It sleeps until the next watchdog ping (WatchdogSec/2), the next rate sample, periodic
STATUS= or ``oldest_unsent`` check (every few seconds, :mod:`edge_agent.remote.unsent`), or an
event: a signal (stop, reload) or a state change a technician should see (the
broker went down, the disk filled up, a device came or went), posted by ``Daemon.notice()``.
The watchdog is pinged only while the pipeline threads are healthy (``Daemon.healthy``: alive,
and none busy with one piece of work for longer than the health window).
"""

from __future__ import annotations

import ctypes
import re
import time
from typing import TYPE_CHECKING

from edge_agent import sdnotify

if TYPE_CHECKING:
    from edge_agent.daemon import Daemon

_QUEUE_FIGURE = re.compile(r"queue \d+ pending")


def serve(daemon: Daemon) -> None:
    """Block until stop is requested, pinging the watchdog while the pipeline is healthy.

    No polling: the loop sleeps until the next watchdog ping (WatchdogSec/2), the next
    rate sample or periodic STATUS=, or an event (stop, reload, a state change).
    """
    ping = sdnotify.watchdog_interval()
    now = time.monotonic()
    next_status = now + daemon.STATUS_EVERY_S
    next_ping = now + ping if ping is not None else float("inf")
    last_status = daemon.ready_status  # READY=1 carried it (what changed since goes out now)
    while not daemon.stopping.is_set():
        now = time.monotonic()
        unsent = daemon.remote.unsent
        due = min(next_ping, next_status, daemon.rates.next_sample(), unsent.next_check())
        daemon.wakeup.wait(max(0.0, due - now))
        daemon.wakeup.clear()
        if daemon.stopping.is_set():
            return
        if daemon.reload_requested.is_set():
            daemon.reload_requested.clear()
            daemon.reload()
        now = time.monotonic()
        if now >= next_ping:
            next_ping = max(next_ping + (ping or 0.0), now + 0.5 * (ping or 0.0))
            if daemon.healthy(window=daemon.HEALTH_WINDOW_S):
                sdnotify.notify("WATCHDOG=1")
        daemon.rates.sample(daemon.workers)
        unsent.check()  # (a no-op before its time)
        line = daemon.status_line()
        # at once when something changed that a technician should see (the broker went
        # down, the disk filled up), else every STATUS_EVERY_S for the queue figure
        changed = _QUEUE_FIGURE.sub("", line) != _QUEUE_FIGURE.sub("", last_status)
        if changed or now >= next_status:
            next_status = now + daemon.STATUS_EVERY_S
            last_status = line
            sdnotify.notify("STATUS=" + line)


def return_big_buffers_to_the_os() -> None:
    """glibc keeps freed batch payloads (~200 KB) in heap arenas; mmap them instead (RSS)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD: a fixed threshold, no dynamic growth
    except (OSError, AttributeError):
        pass  # not glibc: nothing to tune
