"""Rolling KPIs of one station and the thresholds they are compared with.

Counts are kept per event time (``mono_ns``) in a deque and summed over the last
``kpi_window_s``; ``totals`` count since the station started. Rates are percent of the parcels
finished in the window (None while there are none)::

    noread_pct          parcels where no code was read
    invalid_pct         parcels with at least one invalid code
    multiread_pct       parcels with two or more valid waybills
    duplicate_pct       duplicate scans (same code, another passage, within dedup_window_ms)
    scan_error_pct      parcels without a chosen waybill + duplicate scans
    reconciliation_pct  parcels not reconciled (no waybill, or no stable weight where required)
    parcels_per_h       parcels in the window / covered time (window, or less since start)

A threshold is compared at each snapshot once ``min_parcels`` are in the window; crossing it
upwards raises a ``kpi_threshold`` exception (state "raised"), falling back to or below it
emits one with state "cleared".
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

from edge_agent.station.config import StationConfig

_S = 1_000_000_000

#: Counted names, in the order they appear in a snapshot.
COUNTS = (
    "parcels",
    "noread",
    "invalid",
    "multiread",
    "no_waybill",
    "unreconciled",
    "no_weight",
    "unstable_weight",
    "overweight",
    "underweight",
    "duplicates",
    "orphans",
    "reads",
    "repeats",
)


@dataclass(frozen=True, slots=True)
class Crossing:
    """A threshold crossed at a snapshot."""

    kpi: str
    value: float
    threshold: float
    state: str  # "raised" | "cleared"


class KpiTracker:
    """Rolling counters, snapshot schedule and threshold state of one station.

    Args:
        cfg: the station's configuration (window, interval, thresholds).
    """

    def __init__(self, cfg: StationConfig) -> None:
        self.window_ns = int(cfg.kpi_window_s * _S)
        self.interval_ns = int(cfg.kpi_interval_s * _S)
        self.limits = cfg.thresholds.limits()
        self.min_parcels = cfg.thresholds.min_parcels
        self.start_ns: int | None = None
        self.next_due: int | None = None
        self.raised: set[str] = set()
        self._events: deque[tuple[int, Counter[str]]] = deque()
        self._rolling: Counter[str] = Counter()
        self.totals: Counter[str] = Counter()

    def start(self, t: int) -> None:
        """Set the station's start time (first clock value seen), once."""
        if self.start_ns is None:
            self.start_ns = t
            self.next_due = t + self.interval_ns

    def count(self, t: int, **amounts: int) -> None:
        """Count ``amounts`` at time ``t`` (mono ns)."""
        c = Counter({k: v for k, v in amounts.items() if v})
        if not c:
            return
        self._events.append((t, c))
        self._rolling.update(c)
        self.totals.update(c)

    def due(self, now: int) -> bool:
        """Whether a snapshot is due at ``now``; if so, schedules the next one."""
        if self.next_due is None or now < self.next_due:
            return False
        missed = (now - self.next_due) // self.interval_ns
        self.next_due += (missed + 1) * self.interval_ns
        return True

    def _prune(self, now: int) -> None:
        horizon = now - self.window_ns
        while self._events and self._events[0][0] <= horizon:
            _, c = self._events.popleft()
            self._rolling.subtract(c)

    def rates(self, now: int) -> dict[str, float | None]:
        """The rates over the window ending at ``now``."""
        self._prune(now)
        n = self._rolling["parcels"]
        r = self._rolling

        def pct(x: int) -> float | None:
            return 100.0 * x / n if n else None

        span_s = min(self.window_ns, now - (self.start_ns or now)) / _S
        return {
            "noread_pct": pct(r["noread"]),
            "invalid_pct": pct(r["invalid"]),
            "multiread_pct": pct(r["multiread"]),
            "duplicate_pct": pct(r["duplicates"]),
            "scan_error_pct": pct(r["no_waybill"] + r["duplicates"]),
            "reconciliation_pct": pct(r["unreconciled"]),
            "parcels_per_h": n * 3600.0 / span_s if span_s > 0 else None,
        }

    def snapshot(self, now: int) -> dict[str, Any]:
        """Counts, totals and rates at ``now`` (the ``kpi`` event body without station state)."""
        rates = self.rates(now)
        span = min(self.window_ns, now - (self.start_ns or now))
        return {
            "window_s": self.window_ns / _S,
            "interval_s": self.interval_ns / _S,
            "span_s": span / _S,
            "counts": {k: self._rolling[k] for k in COUNTS},
            "totals": {k: self.totals[k] for k in COUNTS},
            "rates": rates,
            "thresholds": dict(self.limits),
            "alarms": sorted(self.raised),
            "mono_ns": now,
        }

    def evaluate(self, rates: dict[str, float | None]) -> list[Crossing]:
        """Compare ``rates`` with the thresholds; returns the crossings (state updated)."""
        if self._rolling["parcels"] < self.min_parcels:
            return []
        out = []
        for kpi, limit in self.limits.items():
            value = rates.get(kpi)
            if value is None:
                continue
            above = value > limit
            if above != (kpi in self.raised):
                (self.raised.add if above else self.raised.discard)(kpi)
                out.append(Crossing(kpi, value, limit, "raised" if above else "cleared"))
        return out
