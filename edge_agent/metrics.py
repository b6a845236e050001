"""Prometheus metrics (off by default; when on, served on 127.0.0.1 only).

A collector reads the daemon's status at scrape time (no bookkeeping on the hot path), plus one
histogram of publish→PUBACK latency fed by the publisher.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

STATES = ("connected", "reconnecting", "starting", "stopped")


class _StatusCollector(Collector):
    def __init__(self, status: Callable[[], dict[str, Any]]) -> None:
        self.status = status

    def collect(self) -> Iterator[Any]:
        st = self.status()
        readings = CounterMetricFamily("edge_agent_readings", "Readings read", labels=["device"])
        rejects = CounterMetricFamily(
            "edge_agent_rejects", "Frames rejected", labels=["device", "reason"]
        )
        state = GaugeMetricFamily(
            "edge_agent_device_state",
            "1 for the device's current state",
            labels=["device", "state"],
        )
        for dev, d in st["devices"].items():
            readings.add_metric([dev], d["readings"])
            for reason, n in d["rejects"].items():
                rejects.add_metric([dev, reason], n)
            for s in STATES:
                state.add_metric([dev, s], float(d["state"] == s))
        yield from (readings, rejects, state)
        q, b = st["queue"], st["broker"]
        yield GaugeMetricFamily(
            "edge_agent_queue_pending", "Readings not yet PUBACKed", value=q["pending"]
        )
        yield GaugeMetricFamily(
            "edge_agent_queue_oldest_pending_seconds",
            "Age of the oldest unsent reading",
            value=q["oldest_pending_age_s"] or 0.0,
        )
        yield GaugeMetricFamily(
            "edge_agent_queue_disk_bytes", "Queue file size", value=q["disk_bytes"]
        )
        yield CounterMetricFamily(
            "edge_agent_queue_dropped", "Readings refused at the bound", value=q["dropped"]
        )
        yield GaugeMetricFamily(
            "edge_agent_broker_connected", "1 when connected", value=float(b["connected"])
        )
        yield CounterMetricFamily(
            "edge_agent_broker_reconnects", "Broker disconnects", value=b["reconnects"]
        )
        yield CounterMetricFamily(
            "edge_agent_published_readings", "Readings PUBACKed", value=b["acked_rows"]
        )


def serve(port: int, status: Callable[[], dict[str, Any]]) -> Callable[[float], None]:
    """Start the endpoint on 127.0.0.1:port; returns the latency observer for the publisher."""
    registry = CollectorRegistry()
    registry.register(_StatusCollector(status))
    latency = Histogram(
        "edge_agent_publish_latency_seconds",
        "Publish to PUBACK, per message",
        buckets=(0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 5),
        registry=registry,
    )
    start_http_server(port, addr="127.0.0.1", registry=registry)
    return latency.observe
