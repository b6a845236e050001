"""What ``edge-agent status`` (and ``/metrics``) report, built from the daemon's parts.

Kept out of :mod:`edge_agent.daemon` so that the daemon only wires and runs things. Every
function here reads shared state that other threads write (counters, states): single reads of
ints and strings, never a lock taken on the pipeline's path.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import asdict
from typing import TYPE_CHECKING

from edge_agent import outbox
from edge_agent.config import QueueConfig
from edge_agent.station_runner import StationRunner
from edge_agent.supervisor import DeviceWorker

if TYPE_CHECKING:
    from edge_agent.daemon import Daemon
    from edge_agent.publisher import Publisher
    from edge_agent.writer import Writer


class Rates:
    """Readings and rejects per minute per device, from samples taken every ``EVERY_S``."""

    EVERY_S = 5.0
    #: Samples kept: one minute of them, plus the current one.
    KEEP = 13

    def __init__(self) -> None:
        self.samples: deque[tuple[float, dict[str, tuple[int, int]]]] = deque(maxlen=self.KEEP)

    def sample(self, workers: Iterable[DeviceWorker]) -> None:
        """Take a sample if the last is ``EVERY_S`` old (the daemon's main loop calls this)."""
        now = time.monotonic()
        if self.samples and now - self.samples[-1][0] < self.EVERY_S:
            return
        counts = {w.driver.device_id: (w.readings, sum(w.driver.rejects.values())) for w in workers}
        self.samples.append((now, counts))

    def next_sample(self) -> float:
        """When (``time.monotonic()``) the next sample is due."""
        return self.samples[-1][0] + self.EVERY_S if self.samples else time.monotonic()

    def forget(self, device: str) -> None:
        """A device's worker restarted (reload): it counts from 0 again, so its old samples
        would give a negative rate."""
        for _t, counts in list(self.samples):
            counts.pop(device, None)

    def per_minute(self, device: str) -> tuple[float, float]:
        """Readings and rejects per minute over the sampled window, from the oldest sample of
        this device's current worker."""
        samples = [(t, c[device]) for t, c in list(self.samples) if device in c]
        if len(samples) < 2:
            return 0.0, 0.0
        (t0, a), (t1, b) = samples[0], samples[-1]
        span = max(t1 - t0, 1e-3) / 60
        # counts only grow within one worker; max() guards a sample taken mid-restart
        return round(max(b[0] - a[0], 0) / span, 1), round(max(b[1] - a[1], 0) / span, 1)


def device_status(w: DeviceWorker, rates: Rates) -> dict[str, object]:
    """One device: state and why, counters, rates, last reading."""
    now = time.monotonic()
    per_min = rates.per_minute(w.driver.device_id)
    last = None if w.last_reading_mono is None else round(now - w.last_reading_mono, 3)
    return {
        "type": w.driver.kind,
        "port": getattr(w.driver.cfg, "port", None),
        "address": w.driver.address,
        "state": w.state,
        "reason": w.reason,
        "readings": w.readings,
        "last_reading_age_s": last,
        "last_value": w.last_value,
        "rejects": dict(w.driver.rejects),
        "readings_per_min": per_min[0],
        "rejects_per_min": per_min[1],
        "reconnects": w.reconnects,
    }


def queue_status(cfg: QueueConfig) -> dict[str, object]:
    """The queue's counters, oldest unsent age and size on disk (a short WAL read)."""
    path = cfg.path
    con = outbox.open_reader(path)
    try:
        st = outbox.stats(con)
    finally:
        con.close()
    oldest = None if st.oldest_pending_ns is None else time.time() - st.oldest_pending_ns / 1e9
    disk = sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file())
    return {
        **asdict(st),
        "oldest_pending_age_s": oldest,
        "disk_bytes": disk,
        "path": str(path),
        "max_bytes": cfg.max_bytes,
    }


def station_status(stations: StationRunner | None) -> dict[str, object]:
    """Each station's KPIs ({} without stations)."""
    if stations is None:
        return {}
    try:
        return {sid: st.kpis() for sid, st in stations.stations.items()}
    except RuntimeError:  # a station changed mid-read (other thread); next status is fine
        return {}


def status_line(workers: list[DeviceWorker], pending: int, pub: Publisher, writer: Writer) -> str:
    """One line for ``systemctl status``: devices, queue depth, broker."""
    up = sum(w.state == "connected" for w in workers)
    broker = "up" if pub.connected else f"down ({pub.last_error or 'connecting'})"
    line = f"devices {up}/{len(workers)} up, queue {pending} pending, broker {broker}"
    if writer.disk_full:
        line += f", DISK FULL ({writer.disk_full})"
    if writer.failing:
        line += f", QUEUE WRITE FAILING ({writer.failing})"
    return line


def agent_status(d: Daemon) -> dict[str, object]:
    """Everything ``edge-agent status`` shows (see README "Control socket")."""
    return {
        "agent": d.node.agent,
        "site": d.node.site,
        "line": d.node.line,
        "pid": os.getpid(),
        "uptime_s": round(time.monotonic() - d.started_mono, 1),
        "devices": {w.driver.device_id: device_status(w, d.rates) for w in d.workers},
        "queue": {**queue_status(d.cfg.queue), "journal_failed": d.journal.failed},
        "broker": d.publisher.status(),
        "stations": station_status(d.stations),
        **d.remote.status(),
        "summary": d.status_line(),
    }
