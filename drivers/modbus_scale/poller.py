"""Bus time for several units on one link, and when a unit's weight becomes a reading.

Scheduling (docs/reliability.md M3, T12): one thread owns the link and picks the unit whose poll is
most overdue. A failed attempt is retried at once, but *after* every other unit already due,
so a dead slave never takes two timeouts in a row from the others. After ``1 + retries``
attempts in a row without any answer a unit goes offline and is probed once every
``offline_probe_ms`` without retries; a unit that answers garbage (CRC, wrong unit id) is
alive and stays on its cadence. A healthy unit therefore waits at most one request timeout
per probe of a dead one (it misses at most one poll), and a dead unit is back on the first
probe it answers.

Emission: a unit's weight becomes a reading when it is *stable* (status bits, or else the same
value for ``settle_polls`` polls), above ``min_weight_g`` and different (by more than
``min_change_g``) from the last weight that unit published. An empty platform (zero bit, or
``|weight| <= min_weight_g``) re-arms the unit, so two parcels of equal weight are two readings.
Motion is never published; neither is the same stable weight polled again.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

from drivers.modbus_scale.config import ModbusScaleConfig
from drivers.modbus_scale.registers import Sample


@dataclass
class UnitState:
    """What the driver knows about one unit id on the link."""

    unit: int
    due: float = 0.0
    fails: int = 0
    garbled: int = 0
    online: bool = True
    last_outcome: str = ""
    published_g: float | None = None
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=50))
    stats: Counter[str] = field(default_factory=Counter)


class Scheduler:
    """Which unit to poll next.

    Args:
        cfg: the device config (units, poll_ms, retries, offline_probe_ms).
    """

    def __init__(self, cfg: ModbusScaleConfig) -> None:
        self.poll_s = cfg.poll_ms / 1000
        self.probe_s = cfg.offline_probe_ms / 1000
        self.attempts = 1 + cfg.retries
        self.units = {u: UnitState(u) for u in cfg.units}

    def restart(self, now: float) -> None:
        """Everything due now (after (re)opening the link); offline units stay offline."""
        for st in self.units.values():
            st.due = now

    def next_due(self, now: float) -> UnitState | None:
        """The most overdue unit, or None if none is due yet."""
        st = min(self.units.values(), key=lambda s: s.due)
        return st if st.due <= now else None

    def wait_s(self, now: float) -> float:
        """Seconds until the next unit is due."""
        return max(0.0, min(s.due for s in self.units.values()) - now)

    def answered(self, st: UnitState, now: float) -> bool:
        """Record an answer; returns True if the unit just came back online."""
        back = not st.online
        st.online, st.fails, st.garbled = True, 0, 0
        st.due = max(st.due + self.poll_s, now) if not back else now + self.poll_s
        return back

    def garbled(self, st: UnitState, now: float) -> None:
        """Record an answer that made no response (CRC, wrong unit): the unit is alive.

        Retried at once (after the others) up to ``retries`` times in a row, then it keeps its
        normal cadence: a noisy line costs the others no more than a quiet one.
        """
        st.garbled += 1
        if st.garbled < self.attempts:
            st.due = now
        else:
            st.garbled = 0
            st.due = max(st.due + self.poll_s, now)

    def failed(self, st: UnitState, now: float) -> bool:
        """Record an attempt with no answer at all; returns True if the unit just went offline."""
        st.fails += 1
        if not st.online:
            st.due = now + self.probe_s
            return False
        if st.fails < self.attempts:
            st.due = now  # retried, but after every unit already waiting (they are older)
            return False
        st.online = False
        st.due = now + self.probe_s
        return True

    def all_offline(self) -> bool:
        """True when no unit on the link answers."""
        return not any(s.online for s in self.units.values())


def settle(st: UnitState, sample: Sample, cfg: ModbusScaleConfig) -> str:
    """Decide what one good sample means; returns the outcome, ``"reading"`` to publish.

    Outcomes: ``empty`` (re-arms), ``motion``, ``same`` (already published), ``reading``.
    """
    if sample.zero or abs(sample.grams) <= cfg.min_weight_g:
        st.published_g = None
        st.recent.clear()
        return "empty"
    st.recent.append(sample.grams)
    stable = sample.stable
    if stable is None:
        last = list(st.recent)[-cfg.settle_polls :]
        stable = len(last) == cfg.settle_polls and len(set(last)) == 1
    if not stable:
        return "motion"
    if st.published_g is not None and abs(sample.grams - st.published_g) <= cfg.min_change_g:
        return "same"
    st.published_g = sample.grams
    return "reading"
