"""The simulated line's configuration and the truth it records."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from edge_agent.station import StationConfig

CODE_FAULTS = ("noread", "multiread", "invalid")
WEIGHT_FAULTS = ("overweight", "underweight", "unstable", "no_weight")
TRIGGER_FAULTS = ("duplicate", "late")


@dataclass(frozen=True)
class LineConfig:
    """The simulated line.

    Args:
        rate_per_h: parcels per hour.
        duration_s: simulated time, seconds (parcels = round(rate * duration / 3600)).
        seed: RNG seed: same seed, same readings and truth.
        correlation: "gate" (heads report a shared gate index) or "window".
        heads: tunnel heads (tunnel_1 is the master, the window trigger).
        window_ms: the station window the timing is designed for (ms).
        noread, multiread, invalid: code faults, share of parcels (mutually exclusive).
        overweight, underweight, unstable, no_weight: weight faults (mutually exclusive).
        duplicate, late: trigger faults, on parcels without code faults.
        slave_read: probability that a slave head also reads the label (a repeat).
        min_weight_g, max_weight_g: the limits the station is configured with (grams).
        start_mono_ns: ``mono_ns`` of the start of the run.
        epoch_ns: wall-clock time (Unix ns) matching ``start_mono_ns``.
    """

    rate_per_h: float = 6000.0
    duration_s: float = 240.0
    seed: int = 1
    correlation: Literal["gate", "window"] = "gate"
    heads: int = 2
    window_ms: int = 300
    noread: float = 0.01
    multiread: float = 0.02
    invalid: float = 0.01
    overweight: float = 0.005
    underweight: float = 0.0
    unstable: float = 0.0
    no_weight: float = 0.0
    duplicate: float = 0.005
    late: float = 0.005
    slave_read: float = 0.5
    min_weight_g: float = 50.0
    max_weight_g: float = 30_000.0
    start_mono_ns: int = 1_000 * 1_000_000_000
    epoch_ns: int = 1_767_225_600 * 1_000_000_000
    station: str = "st1"
    node: tuple[str, str, str] = ("SIM", "L1", "line-sim")

    def __post_init__(self) -> None:
        if not 1 <= self.heads <= 8 or (self.late and self.heads < 2):
            msg = "heads must be 1..8, and late results need at least 2 heads"
            raise ValueError(msg)
        if self.rate_per_h <= 0 or self.duration_s <= 0:
            msg = "rate_per_h and duration_s must be positive"
            raise ValueError(msg)
        if self.window_ms < 260:
            msg = "window_ms must be >= 260: readings come up to 250 ms after the master's"
            raise ValueError(msg)
        gap_ms = 0.9 * 3_600_000 / self.rate_per_h
        if gap_ms < self.window_ms + 100:
            msg = f"rate {self.rate_per_h}/h leaves {gap_ms:.0f} ms between parcels; "
            msg += f"window_ms {self.window_ms} + 100 ms margin would overlap them"
            raise ValueError(msg)

    @property
    def parcels(self) -> int:
        """Number of parcels in the run."""
        return round(self.rate_per_h * self.duration_s / 3600)

    def devices(self) -> list[str]:
        """Device ids: tunnel_1..tunnel_n, scale_1."""
        return [f"tunnel_{k}" for k in range(1, self.heads + 1)] + ["scale_1"]

    def station_config(self, **overrides: Any) -> StationConfig:
        """A StationConfig matching this line (keyword overrides win)."""
        base: dict[str, Any] = {
            "devices": self.devices(),
            "correlation": self.correlation,
            "window_ms": self.window_ms,
            "dedup_window_ms": 5_000,
            "weight_devices": ["scale_1"],
            "require_weight": True,
            "min_weight_g": self.min_weight_g,
            "max_weight_g": self.max_weight_g,
            "kpi_interval_s": 60.0,
            "kpi_window_s": 3600.0,
        }
        if self.correlation == "window":
            base["trigger_devices"] = ["tunnel_1"]
        return StationConfig.model_validate({**base, **overrides})


@dataclass
class ParcelTruth:
    """What a correct station must report for one parcel."""

    n: int
    arrival_ns: int
    labels: list[str]
    injected: list[str]
    parcel: str = ""  # id of the opening reading
    gate: int | None = None
    waybill: str | None = None
    codes: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    weight_g: float | None = None
    readings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ExpectedException:
    """An exception event a correct station must emit (matched on these fields)."""

    exception: str
    parcel: str | None = None
    reading: str | None = None
    code: str | None = None
    reason: str | None = None
