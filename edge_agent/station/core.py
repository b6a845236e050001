"""The station: committed readings in, parcel / exception / KPI events out.

Pure and deterministic: the only clock is the ``mono_ns`` of the readings and the ``now``
given to :meth:`Station.tick` / :meth:`Station.device_state`; no I/O. A lock makes the daemon's
writer thread (``feed``) and its timer thread (``tick``) safe to share one station.

Order of decisions for one reading (see :mod:`edge_agent.station.correlate` for placement):

1. passages whose window (+ ``close_delay_ms``) ended before the station clock are finished:
   one ``parcel`` event each, followed by its exceptions;
2. a late gate result is an ``orphan`` naming its parcel;
3. a code already in the passage the reading belongs to is a repeat (counts once);
4. a code read in *another* passage within ``dedup_window_ms`` is a ``duplicate`` exception
   (never attached to the new passage, never opening one);
5. otherwise the reading is attached, opens a passage, or is an ``orphan``.
"""

from __future__ import annotations

import threading
from typing import Any

from edge_agent.station.config import StationConfig
from edge_agent.station.correlate import Correlator, Placement
from edge_agent.station.events import StationEvent, exception
from edge_agent.station.kpi import KpiTracker
from edge_agent.station.passage import Obs, Passage, parse_reading
from edge_agent.station.verdict import Verdict, judge
from edge_agent.waybill import WaybillTable

_MS = 1_000_000

#: Device states (from the supervisor) that make a device unavailable to the station.
OFFLINE_STATES = frozenset({"reconnecting", "disconnected", "offline", "failed", "error"})


class Station:
    """One sorting station.

    Args:
        station_id: the station id (``[stations.<id>]``).
        cfg: its configuration.
        patterns: the waybill table (``WaybillTable.from_config(cfg.waybills)``).
    """

    def __init__(self, station_id: str, cfg: StationConfig, patterns: WaybillTable) -> None:
        self.id = station_id
        self.cfg = cfg
        self.table = patterns
        self.carriers = frozenset(cfg.carriers) if cfg.carriers is not None else None
        self.devices = frozenset(cfg.devices)
        self.weight_devices = frozenset(cfg.weight_devices)
        self.kpi = KpiTracker(cfg)
        self.offline: set[str] = set()
        #: Readings not used: malformed, heartbeats, empty platform, other weight devices.
        self.ignored = 0
        self._corr = Correlator(cfg)
        self._dedup_ns = cfg.dedup_window_ms * _MS
        self._codes: dict[str, tuple[int, Passage]] = {}  # code => (last read, its passage)
        self._clock: int | None = None
        self._lock = threading.Lock()

    # ---- public interface ---------------------------------------------------------------
    def feed(self, reading: dict[str, Any]) -> list[StationEvent]:
        """Take one committed reading (a reading.v1 dict); returns the events it causes.

        Readings of devices outside the station return nothing; malformed ones are counted
        in :attr:`ignored`. Never raises on bad input.
        """
        obs = parse_reading(reading)
        if obs is not None and obs.device not in self.devices:
            return []
        with self._lock:
            if obs is None:
                self.ignored += 1
                return []
            out = self._advance(obs.t)
            out += self._take(obs)
            return out

    def tick(self, now_mono_ns: int) -> list[StationEvent]:
        """Finish passages whose window is over and emit a KPI snapshot when one is due."""
        with self._lock:
            out = self._advance(now_mono_ns)
            now = max(now_mono_ns, self._clock or 0)  # a reading fed since `now` was read
            if self.kpi.due(now):
                out += self._snapshot(now)
            return out

    def next_tick_ns(self) -> int | None:
        """When :meth:`tick` next has work: now while a passage is open (its window closes by
        time), else the next KPI snapshot; None: nothing until a reading comes."""
        with self._lock:
            if self._corr.open:
                return self._clock or 0
            return self.kpi.next_due

    def device_state(self, device: str, state: str, now_mono_ns: int) -> list[StationEvent]:
        """A device changed state: a needed device going offline is a ``device_offline``."""
        if device not in self.devices:
            return []
        with self._lock:
            if state == "connected":
                self.offline.discard(device)
                return []
            if state not in OFFLINE_STATES or device in self.offline:
                return []
            self.offline.add(device)
            if device in self.cfg.optional_devices:
                return []
            return [
                exception(
                    self.id, "device_offline", now_mono_ns, device=device, details={"state": state}
                )
            ]

    def kpis(self) -> dict[str, Any]:
        """The current rolling KPIs (for status and metrics); thresholds not re-evaluated."""
        with self._lock:
            now = self._clock if self._clock is not None else 0
            return self._kpi_body(now)

    # ---- internals ----------------------------------------------------------------------
    def _advance(self, t: int) -> list[StationEvent]:
        self.kpi.start(t)
        if self._clock is None or t > self._clock:
            self._clock = t
        out: list[StationEvent] = []
        for p in self._corr.expire(self._clock):
            out += self._finish(p)
        self._forget_codes(self._clock)
        return out

    def _take(self, obs: Obs) -> list[StationEvent]:
        if obs.kind == "heartbeat" or not self._is_station_weight(obs):
            self.ignored += 1
            return []
        place = self._corr.place(obs)
        if place.action == "orphan" and place.reason == "late":
            return [self._orphan(obs, place)]
        if obs.code is not None:
            if place.passage is not None and obs.code in place.passage.codes:
                return self._attach(place.passage, obs)
            recent = self._codes.get(obs.code)
            if recent is not None and abs(obs.t - recent[0]) <= self._dedup_ns:
                return [self._duplicate(obs, recent)]
        if place.action == "attach" and place.passage is not None:
            return self._attach(place.passage, obs)
        if place.action == "open":
            return self._attach(self._corr.open_passage(obs), obs)
        return [self._orphan(obs, place)]

    def _is_station_weight(self, obs: Obs) -> bool:
        if obs.kind != "weight":
            return True
        if self.weight_devices and obs.device not in self.weight_devices:
            return False
        return obs.grams is not None and obs.grams > self.cfg.empty_max_g

    def _attach(self, p: Passage, obs: Obs) -> list[StationEvent]:
        p.add(obs)
        if obs.code is not None:
            last = max(obs.t, self._codes.get(obs.code, (obs.t, p))[0])
            self._codes.pop(obs.code, None)  # re-insert: dict order = last-read order
            self._codes[obs.code] = (last, p)
        return []

    def _duplicate(self, obs: Obs, recent: tuple[int, Passage]) -> StationEvent:
        last, p = recent
        self._codes.pop(obs.code or "", None)
        self._codes[obs.code or ""] = (max(last, obs.t), p)
        self.kpi.count(obs.t, duplicates=1)
        return exception(
            self.id,
            "duplicate",
            obs.t,
            parcel=p.ref,
            reading=obs.ref,
            device=obs.device,
            code=obs.code,
            gate=obs.gate,
            details={"since_last_ms": (obs.t - last) / 1e6},
        )

    def _orphan(self, obs: Obs, place: Placement) -> StationEvent:
        self.kpi.count(obs.t, orphans=1)
        details: dict[str, Any] = {"kind": obs.kind}
        if obs.grams is not None:
            details["weight_g"] = obs.grams
        return exception(
            self.id,
            "orphan",
            obs.t,
            reading=obs.ref,
            device=obs.device,
            code=obs.code,
            gate=obs.gate,
            reason=place.reason,
            parcel=place.parcel,
            details=details,
        )

    def _forget_codes(self, now: int) -> None:
        horizon = now - self._dedup_ns
        while self._codes:
            code = next(iter(self._codes))
            if self._codes[code][0] >= horizon:
                break
            del self._codes[code]

    def _finish(self, p: Passage) -> list[StationEvent]:
        v: Verdict = judge(self.id, p, self.cfg, self.table, self.carriers)
        f = set(v.flags)
        no_waybill = v.body["waybill"] is None
        self.kpi.count(
            p.end_ns,
            parcels=1,
            noread=int("noread" in f),
            invalid=int("invalid_code" in f),
            multiread=int("multiread" in f),
            no_waybill=int(no_waybill),
            unreconciled=int(not v.reconciled),
            no_weight=int("no_weight" in f),
            unstable_weight=int("unstable_weight" in f),
            overweight=int("overweight" in f),
            underweight=int("underweight" in f),
            reads=v.body["counts"]["reads"],
            repeats=v.body["counts"]["repeats"],
        )
        return [StationEvent("parcel", self.id, v.body, 0), *v.exceptions]

    def _kpi_body(self, now: int) -> dict[str, Any]:
        body = self.kpi.snapshot(now)
        body["devices_offline"] = sorted(self.offline)
        body["open_passages"] = len(self._corr.open)
        body["ignored"] = self.ignored
        return body

    def _snapshot(self, now: int) -> list[StationEvent]:
        crossings = self.kpi.evaluate(self.kpi.rates(now))
        out = [StationEvent("kpi", self.id, self._kpi_body(now), 0)]
        out += [
            exception(
                self.id,
                "kpi_threshold",
                now,
                reason=c.state,
                details={"kpi": c.kpi, "value": c.value, "threshold": c.threshold},
            )
            for c in crossings
        ]
        return out
