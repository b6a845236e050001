"""A finished passage judged: its parcel event body, its flags and its exception events.

* **waybill**: the one valid code of role "waybill"; when none was read, the one valid
  "logistic" code (GS1 SSCC). Two or more candidates are a ``multiread`` (no waybill chosen).
* **noread**: no code at all in the passage. Each invalid code is an ``invalid_code``.
* **weight**: the last stable weight; only unstable ones: ``unstable_weight``; none while
  ``require_weight``: ``no_weight``; outside ``[min_weight_g, max_weight_g]``: ``overweight``
  / ``underweight``.
* **reconciled**: a waybill was chosen and, where required, a stable weight is known.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edge_agent.station.config import StationConfig
from edge_agent.station.events import EXCEPTION_TYPES, StationEvent, code_entry, exception
from edge_agent.station.passage import Passage, Weight
from edge_agent.waybill import CodeCheck, WaybillTable


@dataclass(frozen=True)
class Verdict:
    """The outcome of one passage.

    Attributes:
        body: the parcel event body.
        flags: exception types raised for this parcel (in :data:`EXCEPTION_TYPES` order).
        exceptions: the exception events for those flags.
        reconciled: whether the parcel can be reconciled (waybill, and weight where required).
    """

    body: dict[str, Any]
    flags: tuple[str, ...]
    exceptions: list[StationEvent]
    reconciled: bool


def judge(
    station: str,
    p: Passage,
    cfg: StationConfig,
    table: WaybillTable,
    carriers: frozenset[str] | None,
) -> Verdict:
    """Judge the finished passage ``p``."""
    codes = sorted(p.codes, key=lambda c: (p.codes[c].first_ns, c))
    checks = {c: table.classify(c, carriers) for c in codes}
    candidates = _candidates(codes, checks)
    waybill = candidates[0] if len(candidates) == 1 else None
    chosen = p.chosen_weight()
    flags = set(_weight_flags(cfg, p, chosen))
    if not codes:
        flags.add("noread")
    if len(candidates) > 1:
        flags.add("multiread")
    invalid = [c for c in codes if not checks[c].valid]
    if invalid:
        flags.add("invalid_code")
    ordered = tuple(f for f in EXCEPTION_TYPES if f in flags)
    body = _body(p, cfg, codes, checks, waybill, chosen, ordered)
    common = {"parcel": p.ref, "gate": p.gate, "waybill": waybill}
    events = [
        *_parcel_exceptions(station, p, cfg, ordered, candidates, chosen, common),
        *(_invalid(station, p, checks[c], common) for c in invalid),
    ]
    reconciled = waybill is not None and (chosen is not None or not cfg.weight_required)
    return Verdict(body, ordered, events, reconciled)


def _candidates(codes: list[str], checks: dict[str, CodeCheck]) -> list[str]:
    valid = [c for c in codes if checks[c].valid]
    waybills = [c for c in valid if checks[c].role == "waybill"]
    return waybills or valid


def _weight_flags(cfg: StationConfig, p: Passage, chosen: Weight | None) -> list[str]:
    if chosen is None:
        if p.weights:
            return ["unstable_weight"]
        return ["no_weight"] if cfg.weight_required else []
    if cfg.max_weight_g is not None and chosen.grams > cfg.max_weight_g:
        return ["overweight"]
    if cfg.min_weight_g is not None and chosen.grams < cfg.min_weight_g:
        return ["underweight"]
    return []


def _body(
    p: Passage,
    cfg: StationConfig,
    codes: list[str],
    checks: dict[str, CodeCheck],
    waybill: str | None,
    chosen: Weight | None,
    flags: tuple[str, ...],
) -> dict[str, Any]:
    last = p.last_weight()
    body: dict[str, Any] = {
        "parcel": p.ref,
        "correlation": cfg.correlation,
        "waybill": waybill,
        "carrier": checks[waybill].carrier if waybill is not None else None,
        "codes": [code_entry(p, c, checks[c]) for c in codes],
        "weight_g": chosen.grams if chosen else None,
        "devices": sorted(p.devices),
        "readings": list(p.readings),
        "counts": {
            "reads": sum(s.reads for s in p.codes.values()),
            "repeats": p.repeats,
            "noreads": p.noreads,
            "weights": len(p.weights),
        },
        "timing": {
            "opened_mono_ns": p.opened_ns,
            "window_end_mono_ns": p.end_ns,
            "last_reading_ms": (p.last_ns - p.opened_ns) / 1e6,
        },
        "flags": list(flags),
        "mono_ns": p.end_ns,
    }
    if chosen is not None:
        body["weight_device"] = chosen.device
        body["timing"]["weight_ms"] = (chosen.t - p.opened_ns) / 1e6
    elif last is not None:
        body["weight_unstable_g"] = last.grams
    if p.gate is not None:
        body["gate"] = p.gate
    if p.opened_ts is not None:
        body["opened_ts"] = p.opened_ts
    return body


def _parcel_exceptions(
    station: str,
    p: Passage,
    cfg: StationConfig,
    flags: tuple[str, ...],
    candidates: list[str],
    chosen: Weight | None,
    common: dict[str, Any],
) -> list[StationEvent]:
    details: dict[str, dict[str, Any]] = {
        "noread": {"noreads": p.noreads, "devices": sorted(p.devices)},
        "multiread": {"codes": candidates},
        "no_weight": {},
        "unstable_weight": {"weight_g": w.grams} if (w := p.last_weight()) else {},
        "overweight": {"weight_g": chosen.grams if chosen else None, "limit_g": cfg.max_weight_g},
        "underweight": {"weight_g": chosen.grams if chosen else None, "limit_g": cfg.min_weight_g},
    }
    return [
        exception(station, f, p.end_ns, **common, details=details[f]) for f in flags if f in details
    ]


def _invalid(station: str, p: Passage, check: CodeCheck, common: dict[str, Any]) -> StationEvent:
    seen = p.codes[check.code]
    details = {"matched": check.matched} if check.matched else {}
    return exception(
        station,
        "invalid_code",
        p.end_ns,
        **common,
        code=check.code,
        reason=check.reason,
        device=seen.devices[0] if seen.devices else None,
        details=details,
    )
