"""What the station keeps of a reading (:class:`Obs`) and of a parcel passage (:class:`Passage`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, TypeGuard

_KINDS = ("barcode", "noread", "weight", "heartbeat")


@dataclass(frozen=True, slots=True)
class Obs:
    """One committed reading, reduced to what correlation needs.

    Attributes:
        ref: the reading's ``id`` (or ``device#seq`` when it has none).
        device: device id.
        kind: "barcode", "noread", "weight" or "heartbeat".
        t: ``mono_ns`` of the reading (CLOCK_MONOTONIC, ns).
        code: the code text (barcodes).
        grams: the weight in grams (weights).
        stable: the scale's stable flag (weights).
        gate: gate/trigger index, where the device reports one.
        symbology: symbology name, where known.
        ts: wall-clock time of the reading as published (ISO 8601), if present.
    """

    ref: str
    device: str
    kind: str
    t: int
    code: str | None = None
    grams: float | None = None
    stable: bool | None = None
    gate: int | None = None
    symbology: str | None = None
    ts: str | None = None


def parse_reading(r: Any) -> Obs | None:
    """A reading.v1 dict as an :class:`Obs`; None when it is malformed (never raises)."""
    if not isinstance(r, dict):
        return None
    device, kind, t, value = r.get("device"), r.get("kind"), r.get("mono_ns"), r.get("value")
    if not isinstance(device, str) or kind not in _KINDS or not _is_int(t) or t < 0:
        return None
    ref = r.get("id")
    if not isinstance(ref, str) or not ref:
        ref = f"{device}#{r.get('seq')}"
    gate = r.get("gate")
    sym, ts = r.get("symbology"), r.get("ts")
    common: dict[str, Any] = {
        "gate": gate if _is_int(gate) and gate >= 0 else None,
        "symbology": sym if isinstance(sym, str) else None,
        "ts": ts if isinstance(ts, str) else None,
    }
    if kind == "barcode":
        if not isinstance(value, str):
            return None
        return Obs(ref, device, kind, t, code=value, **common)
    if kind == "weight":
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            return None
        stable = r.get("stable")
        return Obs(ref, device, kind, t, grams=float(value), stable=stable is True, **common)
    return Obs(ref, device, kind, t, **common)


def _is_int(v: object) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(slots=True)
class CodeSeen:
    """One distinct code inside a passage."""

    first_ns: int
    reads: int = 0
    devices: list[str] = field(default_factory=list)
    symbology: str | None = None


@dataclass(slots=True)
class Weight:
    """One weight reading inside a passage."""

    t: int
    grams: float
    stable: bool
    device: str


@dataclass(slots=True, eq=False)
class Passage:
    """Everything attributed to one parcel passage so far.

    Attributes:
        ref: the id of the reading that opened it (the parcel's reference in every event).
        opened_ns: ``mono_ns`` of that reading.
        end_ns: end of the window (inclusive), ns.
        gate: the gate index it is keyed by (gate mode), else None.
        opened_ts: wall-clock time of the opening reading, if known.
    """

    ref: str
    opened_ns: int
    end_ns: int
    gate: int | None
    opened_ts: str | None
    readings: list[str] = field(default_factory=list)
    devices: set[str] = field(default_factory=set)
    codes: dict[str, CodeSeen] = field(default_factory=dict)
    weights: list[Weight] = field(default_factory=list)
    noreads: int = 0
    repeats: int = 0
    last_ns: int = 0

    def contains(self, t: int) -> bool:
        """Whether ``t`` lies inside the window."""
        return self.opened_ns <= t <= self.end_ns

    def add(self, obs: Obs) -> None:
        """Attribute ``obs`` to this passage (a repeated code counts once, its reads add up)."""
        self.readings.append(obs.ref)
        self.devices.add(obs.device)
        self.last_ns = max(self.last_ns, obs.t)
        if obs.kind == "barcode" and obs.code is not None:
            seen = self.codes.get(obs.code)
            if seen is None:
                seen = self.codes[obs.code] = CodeSeen(obs.t, symbology=obs.symbology)
            else:
                self.repeats += 1
            seen.reads += 1
            seen.first_ns = min(seen.first_ns, obs.t)
            if obs.device not in seen.devices:
                seen.devices.append(obs.device)
        elif obs.kind == "noread":
            self.noreads += 1
        elif obs.kind == "weight" and obs.grams is not None:
            self.weights.append(Weight(obs.t, obs.grams, bool(obs.stable), obs.device))

    def chosen_weight(self) -> Weight | None:
        """The last stable weight (by time), or None."""
        stable = [w for w in self.weights if w.stable]
        return max(stable, key=lambda w: w.t) if stable else None

    def last_weight(self) -> Weight | None:
        """The last weight of any kind (by time), or None."""
        return max(self.weights, key=lambda w: w.t) if self.weights else None
