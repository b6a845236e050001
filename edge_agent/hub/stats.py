"""The hub's counters and its Prometheus endpoint (off by default; 127.0.0.1 only), like the
agent's (:mod:`edge_agent.metrics`): a collector reads the counters at scrape time, plus one
histogram of batch commit time."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from edge_agent.hub.decode import Rows

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5)


@dataclass
class Stats:
    """What one hub instance did since it started (the metrics and `hub status` read it)."""

    messages: int = 0
    readings: int = 0
    readings_new: int = 0
    parcels: int = 0
    exceptions: int = 0
    rejects: int = 0
    batches: int = 0
    acked: int = 0
    db_errors: int = 0
    last_commit_s: float = 0.0
    lag_s: float = 0.0
    inbox: int = 0
    open_gaps: int = 0
    resend_requests: int = 0
    gone_ranges: int = 0
    started: float = field(default_factory=time.time)
    commit_times: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def batch(self, rows: Rows, commit_s: float, lag_s: float, acked: int, inbox: int) -> None:
        """Count one committed batch."""
        with self.lock:
            self.batches += 1
            self.messages += rows.messages
            self.readings += len(rows.readings)
            self.parcels += len(rows.parcels)
            self.exceptions += len(rows.exceptions)
            self.rejects += len(rows.rejects)
            self.acked += acked
            self.last_commit_s = commit_s
            self.lag_s = lag_s
            self.inbox = inbox
            self.commit_times.append(commit_s)

    def drain_commit_times(self) -> list[float]:
        """Commit times since the last call (for the histogram)."""
        with self.lock:
            out, self.commit_times = self.commit_times, []
        return out


class _Collector(Collector):
    def __init__(self, stats: Stats, hist: Histogram) -> None:
        self.stats = stats
        self.hist = hist

    def collect(self) -> Iterator[Any]:
        s = self.stats
        for t in s.drain_commit_times():
            self.hist.observe(t)
        counters = {
            "messages": ("MQTT messages committed", s.messages),
            "readings": ("Readings received (duplicates included)", s.readings),
            "readings_new": ("Readings new to the database", s.readings_new),
            "parcels": ("Parcel events received", s.parcels),
            "exceptions": ("Exception events received", s.exceptions),
            "rejects": ("Messages stored as rejects", s.rejects),
            "batches": ("Transactions committed", s.batches),
            "db_errors": ("Database connection failures", s.db_errors),
            "resend_requests": ("resend commands sent", s.resend_requests),
            "gone_ranges": ("Ranges agents reported gone", s.gone_ranges),
        }
        for name, (doc, count) in counters.items():
            yield CounterMetricFamily(f"edge_agent_hub_{name}", doc, value=count)
        gauges: dict[str, tuple[str, float]] = {
            "ingest_lag_seconds": ("Arrival to commit, oldest message of the last batch", s.lag_s),
            "batch_commit_seconds_last": ("Last batch: decode, write, commit", s.last_commit_s),
            "inbox": ("Messages received, not yet committed", s.inbox),
            "open_gaps": ("Seq gaps open (whole database)", s.open_gaps),
        }
        for name, (doc, value) in gauges.items():
            yield GaugeMetricFamily(f"edge_agent_hub_{name}", doc, value=value)


def serve_metrics(port: int, stats: Stats) -> None:
    """Start the endpoint on 127.0.0.1:``port``."""
    registry = CollectorRegistry()
    hist = Histogram(
        "edge_agent_hub_batch_commit_seconds",
        "Batch decode, write and commit",
        buckets=BUCKETS,
        registry=registry,
    )
    registry.register(_Collector(stats, hist))
    start_http_server(port, addr="127.0.0.1", registry=registry)
