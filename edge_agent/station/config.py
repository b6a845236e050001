"""The ``[stations.<id>]`` section: which devices see the same parcel and how to tie them."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator

from edge_agent.errors import ConfigError
from edge_agent.model import Ident, StrictModel
from edge_agent.waybill import WaybillConfig, WaybillTable

Pct = Annotated[float, Field(ge=0, le=100)]

#: KPI names a threshold can watch (all rates in percent of parcels).
THRESHOLD_KPIS = (
    "scan_error_pct",
    "reconciliation_pct",
    "noread_pct",
    "invalid_pct",
    "multiread_pct",
    "duplicate_pct",
)


class KpiThresholds(StrictModel):
    """Upper limits in percent of parcels; ``None`` switches a check off.

    Args:
        scan_error_pct: parcels without a waybill (noread, invalid only, multiread) plus
            duplicate scans, per 100 parcels. Courier manuals ask for < 0.2 %.
        reconciliation_pct: parcels that cannot be reconciled (no waybill chosen, or no
            stable weight where one is required), per 100 parcels. Manuals ask for < 0.5 %.
        noread_pct, invalid_pct, multiread_pct, duplicate_pct: optional finer checks.
        min_parcels: parcels needed in the KPI window before any threshold is compared
            (a rate over 3 parcels says nothing).
    """

    scan_error_pct: Pct | None = 0.2
    reconciliation_pct: Pct | None = 0.5
    noread_pct: Pct | None = None
    invalid_pct: Pct | None = None
    multiread_pct: Pct | None = None
    duplicate_pct: Pct | None = None
    min_parcels: Annotated[int, Field(ge=1, le=1_000_000)] = 100

    def limits(self) -> dict[str, float]:
        """The thresholds that are switched on, by KPI name."""
        return {k: v for k in THRESHOLD_KPIS if (v := getattr(self, k)) is not None}


class StationConfig(StrictModel):
    """One sorting station: the tunnel scanners, handhelds and scale that see the same parcel.

    Args:
        devices: device ids (from ``[devices]``) of this station.
        correlation: "gate": readings carrying a gate/trigger index (shared by the station's
            scanners) belong to the parcel of that gate; readings without one attach by time.
            "window": a reading of a ``trigger_devices`` device opens a parcel window of
            ``window_ms``; every reading inside it belongs to that parcel.
        trigger_devices: window mode only: devices whose readings open a window (a photo-eye,
            the master tunnel head). Empty: every non-weight device of the station.
        window_ms: window length after the opening reading, in ms.
        close_delay_ms: how long after a window's end the station still waits before
            publishing the parcel, so readings still in the pipeline (other device threads,
            the queue) are not orphaned, in ms.
        dedup_window_ms: the same code read again at this station within this many ms of its
            last read counts once: in its own passage it is a repeat; in any other passage it
            is a ``duplicate`` exception and is never attached to another parcel.
        gate_memory_ms: gate mode: how long a closed gate is remembered, in ms; a reading of a
            remembered gate is a late result (``orphan``, reason "late"); after that, the gate
            number is treated as new (counter wrap or scanner restart).
        publish_raw: whether the raw readings are still published (the daemon honours it).
        weight_devices: devices whose weight readings are this station's weight. Empty: any
            station device reporting weights.
        require_weight: whether a parcel without a stable weight is an exception
            (``no_weight``); unset: required when ``weight_devices`` are listed.
        min_weight_g: stable weights below this are ``underweight`` (grams); None: no check.
        max_weight_g: stable weights above this are ``overweight`` (grams); None: no check.
        empty_max_g: weights at or below this are the empty platform and ignored (grams).
        optional_devices: station devices whose outage is not a ``device_offline`` exception.
        carriers: carriers accepted at this station (ids of the waybill table); None: all.
        kpi_interval_s: seconds between two ``kpi`` snapshots.
        kpi_window_s: length of the rolling KPI window, in seconds.
        thresholds: KPI limits; crossing one raises a ``kpi_threshold`` exception.
    """

    devices: Annotated[list[Ident], Field(min_length=1, max_length=64)]
    correlation: Literal["gate", "window"]
    trigger_devices: list[Ident] = Field(default_factory=list)
    window_ms: Annotated[int, Field(ge=1, le=60_000)]
    close_delay_ms: Annotated[int, Field(ge=0, le=10_000)] = 100
    dedup_window_ms: Annotated[int, Field(ge=0, le=86_400_000)]
    gate_memory_ms: Annotated[int, Field(ge=0, le=3_600_000)] = 10_000
    publish_raw: bool = True
    weight_devices: list[Ident] = Field(default_factory=list)
    require_weight: bool | None = None
    min_weight_g: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    max_weight_g: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    empty_max_g: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0
    optional_devices: list[Ident] = Field(default_factory=list)
    carriers: list[Ident] | None = None
    kpi_interval_s: Annotated[float, Field(ge=1, le=86_400)] = 60.0
    kpi_window_s: Annotated[float, Field(ge=1, le=7 * 86_400)] = 3600.0
    thresholds: KpiThresholds = KpiThresholds()

    @field_validator("devices")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        _no_repeats(v)
        return v

    @field_validator("trigger_devices", "weight_devices", "optional_devices")
    @classmethod
    def _of_this_station(cls, v: list[str], info: ValidationInfo) -> list[str]:
        _no_repeats(v)
        devices = info.data.get("devices")
        stray = [d for d in v if devices is not None and d not in devices]
        if stray:
            msg = f"devices of this station ({', '.join(devices or [])}); not: {stray}"
            raise ValueError(msg)
        if v and info.field_name == "trigger_devices" and info.data.get("correlation") == "gate":
            msg = "no trigger_devices with correlation = 'gate' (they apply to 'window')"
            raise ValueError(msg)
        return v

    @field_validator("max_weight_g")
    @classmethod
    def _above_min(cls, v: float | None, info: ValidationInfo) -> float | None:
        lo = info.data.get("min_weight_g")
        if v is not None and lo is not None and v <= lo:
            msg = f"more than min_weight_g ({lo})"
            raise ValueError(msg)
        return v

    @field_validator("kpi_window_s")
    @classmethod
    def _covers_interval(cls, v: float, info: ValidationInfo) -> float:
        interval = info.data.get("kpi_interval_s")
        if interval is not None and v < interval:
            msg = f"at least kpi_interval_s ({interval})"
            raise ValueError(msg)
        return v

    @property
    def weight_required(self) -> bool:
        """``require_weight``, or (unset) whether the station lists ``weight_devices``."""
        if self.require_weight is None:
            return bool(self.weight_devices)
        return self.require_weight

    def triggers(self) -> frozenset[str]:
        """Devices whose readings may open a window (window mode)."""
        if self.trigger_devices:
            return frozenset(self.trigger_devices)
        return frozenset(self.devices) - frozenset(self.weight_devices)


def _no_repeats(items: list[str]) -> None:
    seen = {d for d in items if items.count(d) > 1}
    if seen:
        msg = f"each device once; repeated: {sorted(seen)}"
        raise ValueError(msg)


def validate_stations(
    stations: Mapping[str, StationConfig],
    devices: Collection[str],
    waybills: WaybillConfig,
    file: Path,
) -> None:
    """Cross-section checks the models cannot do alone; raises ConfigError naming each problem.

    Every station device must exist in ``[devices]``, a device belongs to at most one
    station, and ``carriers`` must name carriers of the waybill table.
    """
    owner: dict[str, str] = {}
    known = WaybillTable.from_config(waybills).carriers
    errors: list[str] = []
    for sid, st in stations.items():
        where = f"{file}: [stations.{sid}]"
        missing = [d for d in st.devices if d not in devices]
        if missing:
            errors.append(f"{where} devices: {missing} not defined in [devices]")
        for d in st.devices:
            if d in owner:
                errors.append(f"{where} devices: '{d}' already belongs to station '{owner[d]}'")
            else:
                owner[d] = sid
        bad = sorted(set(st.carriers or ()) - known)
        if bad:
            errors.append(f"{where} carriers: unknown {bad} (valid: {', '.join(sorted(known))})")
    if errors:
        raise ConfigError("\n".join(errors), errors)
