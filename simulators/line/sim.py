"""The pure generator: parcels at a rate, their telegrams and weights, faults, and truth."""

from __future__ import annotations

import heapq
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from simulators.line.codes import details, invalid_code, iso, uuid7, waybill
from simulators.line.model import (
    CODE_FAULTS,
    TRIGGER_FAULTS,
    WEIGHT_FAULTS,
    ExpectedException,
    LineConfig,
    ParcelTruth,
)

_MS = 1_000_000


@dataclass(order=True)
class _Item:
    t: int
    order: int
    reading: dict[str, Any] = field(compare=False)


class LineSim:
    """The pure generator. One instance is one run: iterate :meth:`readings` once.

    Args:
        cfg: the line.

    Attributes:
        truth: one :class:`ParcelTruth` per parcel generated so far.
        expected: the exception events a correct station emits for the faults so far.
        faults: the faults injected into each parcel (by parcel number).
    """

    def __init__(self, cfg: LineConfig) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.truth: list[ParcelTruth] = []
        self.expected: list[ExpectedException] = []
        self.faults = self._assign_faults()
        self._gate = self.rng.randrange(0, 1000) if cfg.correlation == "gate" else None
        self._order = 0
        self._seq: Counter[str] = Counter()
        self.heads = cfg.devices()[:-1]

    # ---- fault plan ---------------------------------------------------------------------
    def _assign_faults(self) -> list[set[str]]:
        n, cfg = self.cfg.parcels, self.cfg
        faults: list[set[str]] = [set() for _ in range(n)]
        for group in (CODE_FAULTS, WEIGHT_FAULTS):
            pool = list(range(n))
            for name in group:
                picked = self.rng.sample(pool, min(len(pool), round(getattr(cfg, name) * n)))
                for i in picked:
                    faults[i].add(name)
                pool = [i for i in pool if i not in set(picked)]
        pool = [i for i in range(n) if not faults[i] & set(CODE_FAULTS)]
        for name in TRIGGER_FAULTS:
            picked = self.rng.sample(pool, min(len(pool), round(getattr(cfg, name) * n)))
            for i in picked:
                faults[i].add(name)
            pool = [i for i in pool if i not in set(picked)]
        return faults

    # ---- readings -----------------------------------------------------------------------
    def readings(self) -> Iterator[dict[str, Any]]:
        """Every reading of the run, in ``mono_ns`` order (``seq`` per device in that order)."""
        period = 3_600_000_000_000 / self.cfg.rate_per_h
        heap: list[_Item] = []
        for i in range(self.cfg.parcels):
            arrival = self.cfg.start_mono_ns + int((i + 0.5) * period)
            arrival += int(self.rng.uniform(-0.1, 0.1) * period)
            for item in self._parcel(i, arrival):
                heapq.heappush(heap, item)
            horizon = self.cfg.start_mono_ns + int((i + 1.4) * period)  # next arrival >= this
            while heap and heap[0].t < horizon:
                yield self._stamp(heapq.heappop(heap).reading)
        while heap:
            yield self._stamp(heapq.heappop(heap).reading)

    def _stamp(self, r: dict[str, Any]) -> dict[str, Any]:
        self._seq[r["device"]] += 1
        r["seq"] = self._seq[r["device"]]
        return r

    def _parcel(self, i: int, arrival: int) -> list[_Item]:
        faults = self.faults[i]
        labels = self._labels(i, faults)
        truth = ParcelTruth(i, arrival, labels, sorted(faults))
        self.truth.append(truth)
        tm = arrival + self._ms(40, 60)
        gate = self._next_gate()
        truth.gate = gate
        reads = self._who_reads(labels, faults)
        items: list[_Item] = []
        late: list[_Item] = []
        for k, head in enumerate(self.heads):
            is_late = k == 1 and "late" in faults
            t = tm if k == 0 else tm + self._ms(5, 200)
            batch = self._telegram(head, self._late_time(tm) if is_late else t, reads[head], gate)
            items += batch
            if is_late:
                late = batch
            else:
                truth.readings += [it.reading["id"] for it in batch]
        items += self._weights(truth, tm, faults)
        truth.parcel = items[0].reading["id"]
        self._expect_late(truth, late)
        if "duplicate" in faults:
            items += self._duplicate(truth, tm, reads[self.heads[0]])
        self._expect_parcel(truth, reads, faults)
        return items

    def _ms(self, lo: float, hi: float) -> int:
        return int(self.rng.uniform(lo, hi) * _MS)

    def _next_gate(self) -> int | None:
        if self._gate is None:
            return None
        self._gate += 1
        return self._gate

    def _late_time(self, tm: int) -> int:
        end = tm + self.cfg.window_ms * _MS
        if self.cfg.correlation == "window":
            return end + self._ms(20, 60)
        return end + self._ms(50, 500)

    def _who_reads(self, labels: list[str], faults: set[str]) -> dict[str, list[str]]:
        reads: dict[str, list[str]] = {h: [] for h in self.heads}
        if "noread" in faults:
            return reads
        master, slaves = self.heads[0], self.heads[1:]
        forced = bool(faults & set(TRIGGER_FAULTS)) or not slaves
        readers = [master] if forced or self.rng.random() < 0.8 else []
        readers += [s for s in slaves if self.rng.random() < self.cfg.slave_read]
        for head in readers or [master]:
            reads[head].append(labels[0])
        if len(labels) > 1:
            reads[self.rng.choice(self.heads)].append(labels[1])
        return reads

    def _telegram(self, head: str, t: int, codes: list[str], gate: int | None) -> list[_Item]:
        if not codes:
            return [self._item(self._reading(head, "noread", t, None, gate=gate))]
        return [self._item(self._reading(head, "barcode", t, c, gate=gate)) for c in codes]

    def _weights(self, truth: ParcelTruth, tm: int, faults: set[str]) -> list[_Item]:
        if "no_weight" in faults:
            return []
        grams = self._grams(faults)
        t_stable = tm + self._ms(130, 250)
        out = []
        if "unstable" in faults or self.rng.random() < 0.3:
            motion = round(grams * self.rng.uniform(0.9, 1.1) / 5) * 5.0
            out.append(self._reading("scale_1", "weight", tm + self._ms(20, 120), motion, False))
        if "unstable" not in faults:
            out.append(self._reading("scale_1", "weight", t_stable, grams, True))
            truth.weight_g = grams
        truth.readings += [r["id"] for r in out]
        return [self._item(r) for r in out]

    def _grams(self, faults: set[str]) -> float:
        lo, hi = self.cfg.min_weight_g, self.cfg.max_weight_g
        if "overweight" in faults:
            g = self.rng.uniform(hi + 100, hi + 15_000)
        elif "underweight" in faults:
            g = self.rng.uniform(5, max(6.0, lo - 5))
        else:
            g = self.rng.uniform(max(lo, 200), min(hi, 25_000))
        return round(g / 5) * 5.0

    def _duplicate(self, truth: ParcelTruth, tm: int, codes: list[str]) -> list[_Item]:
        if self.cfg.correlation == "window":
            t, gate = tm + self.cfg.window_ms * _MS + self._ms(20, 60), None
        else:
            t, gate = tm + self._ms(30, 150), self._next_gate()
        batch = self._telegram(self.heads[0], t, codes, gate)
        for it in batch:
            r = it.reading
            self.expected.append(
                ExpectedException("duplicate", truth.parcel, r["id"], r.get("value"))
            )
        return batch

    def _expect_late(self, truth: ParcelTruth, batch: list[_Item]) -> None:
        for it in batch:
            r = it.reading
            if self.cfg.correlation == "gate":
                exp = ExpectedException("orphan", truth.parcel, r["id"], r.get("value"), "late")
            elif r["kind"] == "barcode":  # the master read it on time: the same code, again
                exp = ExpectedException("duplicate", truth.parcel, r["id"], r["value"])
            else:
                exp = ExpectedException("orphan", None, r["id"], None, "no_window")
            self.expected.append(exp)

    def _expect_parcel(
        self, truth: ParcelTruth, reads: dict[str, list[str]], faults: set[str]
    ) -> None:
        late_head = self.heads[1] if "late" in faults else None
        seen = {c for h, cs in reads.items() if h != late_head for c in cs}
        truth.codes = sorted(seen)
        flags = {"noread": "noread", "multiread": "multiread", "invalid": "invalid_code"}
        flags |= {"unstable": "unstable_weight", "no_weight": "no_weight"}
        flags |= {"overweight": "overweight", "underweight": "underweight"}
        truth.flags = sorted(flags[f] for f in faults if f in flags)
        if not faults & set(CODE_FAULTS):
            truth.waybill = truth.labels[0]
        for f in truth.flags:
            code = truth.labels[0] if f == "invalid_code" else None
            reason = invalid_code(truth.n, 0)[1] if code else None
            self.expected.append(ExpectedException(f, truth.parcel, None, code, reason))

    # ---- codes --------------------------------------------------------------------------
    def _labels(self, i: int, faults: set[str]) -> list[str]:
        serial = self.cfg.seed % 1000 * 100_000 + i
        if "invalid" in faults:
            return [invalid_code(i, serial)[0]]
        if "multiread" in faults:  # two carrier waybills (an SSCC beside a waybill is normal)
            return [waybill(i % 10, serial), waybill((i + 3) % 10, serial + 50_000)]
        return [waybill(i % 11, serial)]

    # ---- reading dicts ------------------------------------------------------------------
    def _item(self, r: dict[str, Any]) -> _Item:
        self._order += 1
        return _Item(r["mono_ns"], self._order, r)

    def _reading(
        self,
        device: str,
        kind: str,
        t: int,
        value: str | float | None,
        stable: bool | None = None,
        gate: int | None = None,
    ) -> dict[str, Any]:
        site, line, agent = self.cfg.node
        wall = self.cfg.epoch_ns + (t - self.cfg.start_mono_ns)
        r: dict[str, Any] = {
            "schema": "edge-agent/reading/v1",
            "id": uuid7(wall, self.rng),
            "agent": agent,
            "site": site,
            "line": line,
            "device": device,
            "seq": 0,
            "kind": kind,
            "value": value,
            "ts": iso(wall),
            "mono_ns": t,
            "boot_id": "00000000-0000-4000-8000-000000000001",
        }
        r.update(details(kind, value, stable))
        if gate is not None:
            r["gate"] = gate
        return r
