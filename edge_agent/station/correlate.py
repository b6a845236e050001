"""Which passage a reading belongs to: by gate index, by time window, or none (an orphan).

Rules (``docs/protocols.md`` section 4.1: key first, time as the fallback,
never the nearest parcel):

* **gate mode**, reading with a gate: the passage of that gate if its window is still open
  and the reading is not past its end; a gate closed less than ``gate_memory_ms`` ago makes the
  reading a *late* orphan (it names the parcel it was late for); an unknown gate opens a passage.
* **reading without a key** (gate mode without a gate, or window mode): the one passage whose
  window ``[opened, opened + window_ms]`` contains the reading's ``mono_ns``. None: window mode
  lets a trigger device open a passage, anything else is an orphan ("no_window"). Several
  (overlapping windows): an orphan ("ambiguous"): a reading is never guessed onto a parcel.

A passage is finished once the station clock passes ``end + close_delay_ms``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from edge_agent.station.config import StationConfig
from edge_agent.station.passage import Obs, Passage

_MS = 1_000_000


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a reading goes.

    Attributes:
        action: "attach" (to ``passage``), "open" (a new passage) or "orphan".
        passage: the passage to attach to.
        reason: for orphans: "no_window", "ambiguous" or "late".
        parcel: for late orphans, the reference of the parcel the reading was late for.
    """

    action: Literal["attach", "open", "orphan"]
    passage: Passage | None = None
    reason: str | None = None
    parcel: str | None = None


@dataclass(frozen=True, slots=True)
class _ClosedGate:
    ref: str
    end_ns: int


class Correlator:
    """Open passages of one station and the rule that assigns readings to them.

    Args:
        cfg: the station's configuration.
    """

    def __init__(self, cfg: StationConfig) -> None:
        self.cfg = cfg
        self.window_ns = cfg.window_ms * _MS
        self.close_delay_ns = cfg.close_delay_ms * _MS
        self.memory_ns = cfg.gate_memory_ms * _MS
        self.triggers = cfg.triggers()
        self.open: list[Passage] = []
        self._by_gate: dict[int, Passage] = {}
        self._closed: dict[int, _ClosedGate] = {}

    def place(self, obs: Obs) -> Placement:
        """Where ``obs`` belongs (does not change anything)."""
        if self.cfg.correlation == "gate" and obs.gate is not None:
            return self._by_key(obs, obs.gate)
        inside = [p for p in self.open if p.contains(obs.t)]
        if len(inside) == 1:
            return Placement("attach", inside[0])
        if inside:
            return Placement("orphan", reason="ambiguous")
        if self.cfg.correlation == "window" and obs.device in self.triggers:
            return Placement("open")
        return Placement("orphan", reason="no_window")

    def _by_key(self, obs: Obs, gate: int) -> Placement:
        p = self._by_gate.get(gate)
        if p is not None:
            if obs.t <= p.end_ns:
                return Placement("attach", p)
            return Placement("orphan", reason="late", parcel=p.ref)
        closed = self._closed.get(gate)
        if closed is not None and obs.t <= closed.end_ns + self.memory_ns:
            return Placement("orphan", reason="late", parcel=closed.ref)
        return Placement("open")

    def open_passage(self, obs: Obs) -> Passage:
        """Start a passage with ``obs`` as its opening reading."""
        gate = obs.gate if self.cfg.correlation == "gate" else None
        p = Passage(obs.ref, obs.t, obs.t + self.window_ns, gate, obs.ts, last_ns=obs.t)
        self.open.append(p)
        if gate is not None:
            self._by_gate[gate] = p
            self._closed.pop(gate, None)
        return p

    def expire(self, now: int) -> list[Passage]:
        """Finish and return (by window end) every passage whose window and delay are over."""
        done = sorted(
            (p for p in self.open if p.end_ns + self.close_delay_ns < now),
            key=lambda p: (p.end_ns, p.opened_ns),
        )
        if done:
            finished = {id(p) for p in done}
            self.open = [p for p in self.open if id(p) not in finished]
        for p in done:
            if p.gate is not None:
                self._by_gate.pop(p.gate, None)
                self._closed[p.gate] = _ClosedGate(p.ref, p.end_ns)
        self._forget(now)
        return done

    def _forget(self, now: int) -> None:
        stale = [g for g, c in self._closed.items() if c.end_ns + self.memory_ns < now]
        for g in stale:
            del self._closed[g]
