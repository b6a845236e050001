"""Weight model of one platform (docs/protocols.md §3.5):
empty -> load -> motion -> stable -> unload.

A parcel of 50 g - 30 kg lands (a step), oscillates (damped, +-0.5-3 % for 200-800 ms, motion
flag on), then holds its weight quantised to the division d (2 g up to 6 kg, 5 g up to 15 kg,
10 g above: a three-interval indicator) with the stable flag on, and is taken off. Phases are
generated as time passes, whether or not anyone polls, so a parcel weighed while the cable was
pulled is still in the truth log (with its time window), as on a real line.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

#: Seconds of the phases between parcels and of unloading.
EMPTY_S = (0.3, 0.8)
MOTION_S = (0.2, 0.8)
UNLOAD_S = 0.15
#: Parcel weights, grams (docs/protocols.md §3.5; a courier line's range).
PARCEL_G = (50.0, 30_000.0)


@dataclass(frozen=True)
class State:
    """What the indicator shows at one instant."""

    grams: float
    stable: bool
    zero: bool = False
    overload: bool = False


@dataclass(frozen=True)
class Phase:
    """One stretch of the model: ``kind`` in empty | motion | stable, monotonic [start, end)."""

    kind: str
    start: float
    end: float
    target: float
    origin: float = 0.0
    amp: float = 0.0


def division(grams: float) -> float:
    """The indicator's division d at this load (multi-interval: 2 / 5 / 10 g)."""
    g = abs(grams)
    return 2.0 if g <= 6000 else 5.0 if g <= 15000 else 10.0


def quantise(grams: float) -> float:
    """Round to the division, as the indicator displays it."""
    d = division(grams)
    return round(grams / d) * d


class UnitModel:
    """The platform behind one unit id.

    Args:
        unit: the unit id (for truth records).
        rng: seeded random source (reproducible runs).
        rate: parcels per second (upper bound; phases have minimum lengths).
        parcels: stop after this many parcels (0: never).
        capacity_g: Max; a load above it shows the overload flag.
        overload_p: probability that a parcel is over capacity.
        on_settle: called with (unit, kind, grams, start, end) for every stable phase.
        auto: run parcels by themselves; False waits for :meth:`place`.
    """

    def __init__(
        self, unit: int, rng: random.Random, *, rate: float, parcels: int, capacity_g: float,
        overload_p: float, on_settle: Callable[[int, str, float, float, float], None],
        auto: bool, now: float,
    ) -> None:  # fmt: skip
        self.unit, self.rng, self.rate, self.parcels = unit, rng, rate, parcels
        self.capacity_g, self.overload_p, self.on_settle = capacity_g, overload_p, on_settle
        self.auto = auto
        self.count = 0
        self.phases = [Phase("empty", now, now + self._empty_s() if auto else math.inf, 0.0)]

    def _empty_s(self) -> float:
        low, high = EMPTY_S
        spare = 1.0 / self.rate - 1.4 if self.rate > 0 else 0.0
        return self.rng.uniform(low, high) + max(0.0, spare)

    def _parcel(self) -> float:
        if self.rng.random() < self.overload_p:
            return quantise(self.capacity_g + self.rng.uniform(100, 5000))
        return quantise(math.exp(self.rng.uniform(*map(math.log, PARCEL_G))))

    def advance(self, now: float) -> None:
        """Generate phases up to ``now``."""
        while self.phases[-1].end <= now:
            self._next(self.phases[-1])
        del self.phases[:-3]

    def _next(self, last: Phase) -> None:
        t = last.end
        if last.kind == "empty":
            if self.parcels and self.count >= self.parcels:
                self._add(Phase("empty", t, math.inf, 0.0))
                return
            self.count += 1
            target, m = self._parcel(), self.rng.uniform(*MOTION_S)
            self._add(Phase("motion", t, t + m, target, 0.0, self.rng.uniform(0.005, 0.03)))
        elif last.kind == "motion" and last.target:
            hold = max(0.6, 0.5 / max(self.rate, 0.01)) if self.auto else math.inf
            self._settle(last.target, t, t + hold)
        elif last.kind == "stable":
            self._add(Phase("motion", t, t + UNLOAD_S, 0.0, last.target, 0.0))
        else:
            self._add(Phase("empty", t, t + self._empty_s(), 0.0))

    def _settle(self, target: float, start: float, end: float) -> None:
        self._add(Phase("stable", start, end, target))
        kind = "overload" if target > self.capacity_g else "settled"
        self.on_settle(self.unit, kind, target, start, end)

    def _add(self, phase: Phase) -> None:
        self.phases.append(phase)

    def state(self, now: float) -> State:
        """The indicator's display at ``now``."""
        self.advance(now)
        ph = next(p for p in reversed(self.phases) if p.start <= now)
        over = ph.target > self.capacity_g
        if ph.kind == "empty":
            return State(0.0, stable=True, zero=True)
        if ph.kind == "stable":
            return State(ph.target, stable=True, overload=over)
        return State(self._motion(ph, now), stable=False, overload=over)

    def _motion(self, ph: Phase, now: float) -> float:
        tau = (now - ph.start) / max(ph.end - ph.start, 1e-3)
        if ph.target == 0.0:  # unloading: falls off, bouncing
            return quantise(ph.origin * (1 - tau) * (1 + 0.05 * math.sin(20 * tau)))
        wobble = ph.amp * math.exp(-3 * tau) * math.sin(2 * math.pi * 4 * tau + 1.0)
        return quantise(ph.target * (1 + wobble))

    def place(self, grams: float, now: float, motion_s: float = 0.0) -> float:
        """Put a load on by hand (manual mode): optional motion, then stable until changed."""
        self.advance(now)
        self.auto = False
        target = quantise(grams)
        self._cut(now)
        if motion_s > 0:
            self._add(Phase("motion", now, now + motion_s, target, 0.0, 0.02))
        else:
            self._settle(target, now, math.inf)
        return target

    def resume(self, now: float) -> None:
        """Back to automatic parcels: the current phase ends now."""
        self.advance(now)
        self.auto = True
        self._cut(now)

    def clear(self, now: float) -> None:
        """Empty the platform (manual mode) until the next :meth:`place`."""
        self.advance(now)
        self.auto = False
        self._cut(now)
        self._add(Phase("empty", now, math.inf, 0.0))

    def _cut(self, now: float) -> None:
        last = self.phases[-1]
        self.phases[-1] = Phase(last.kind, last.start, now, last.target, last.origin, last.amp)
