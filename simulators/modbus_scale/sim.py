"""The simulator's public face: weight models per unit, faults, truth log, link faults."""

from __future__ import annotations

import json
import math
import random
import threading
import time
from collections import defaultdict
from dataclasses import asdict, replace
from pathlib import Path

from simulators.modbus_scale.config import BYTE_FAULTS, ScaleSimConfig, Truth
from simulators.modbus_scale.model import State, UnitModel
from simulators.modbus_scale.server import EXCEPTION_CODES, ScaleServer


class ScaleSim:
    """A Modbus weight indicator with one platform per unit id.

    Args:
        cfg: what to simulate.
        truth_file: optional JSONL file receiving every :class:`Truth` record.
    """

    def __init__(self, cfg: ScaleSimConfig, truth_file: Path | None = None) -> None:
        self.cfg = cfg
        self.units = set(cfg.units)
        self.rng = random.Random(cfg.seed)
        self.truth: list[Truth] = []
        self._truth_file = truth_file.open("a", encoding="utf-8") if truth_file else None
        self._lock = threading.Lock()
        self._tlock = threading.Lock()
        self._oneshot: dict[int, list[tuple[str, int | None]]] = defaultdict(list)
        self._silent: set[int] = set()
        self._unit_faults: dict[int, dict[str, float]] = {}
        m = cfg.registers
        other = "little" if m.word_order == "big" else "big"
        self.served_map = m.model_copy(update={"word_order": other}) if cfg.swap_words else m
        #: Decimal count served (in the decimal-point register when the map has one).
        self.decimals = (m.decimals or 3) if m.decimals_register is not None else m.decimals
        now = time.monotonic()
        self.models = {u: self._model(u, now) for u in cfg.units}
        self.server = ScaleServer(self)

    def _model(self, unit: int, now: float) -> UnitModel:
        cfg = self.cfg
        return UnitModel(
            unit, random.Random(cfg.seed * 1000 + unit), rate=cfg.rate, parcels=cfg.parcels,
            capacity_g=cfg.capacity_g, overload_p=cfg.faults.get("overload", 0.0),
            on_settle=self._settled, auto=cfg.auto, now=now,
        )  # fmt: skip

    # ---- running -----------------------------------------------------------------
    def start(self) -> ScaleSim:
        """Start serving; returns self."""
        self.server.start()
        return self

    def stop(self) -> None:
        """Stop serving and release every port, pty and thread."""
        self.server.close()
        if self._truth_file:
            self._truth_file.close()
            self._truth_file = None

    @property
    def url(self) -> str:
        """What a driver opens: the pty symlink/path (rtu) or ``socket://host:port`` (rtu-tcp)."""
        pty = self.server.device_pty
        if pty is not None:
            return pty.url
        return f"socket://{self.cfg.host}:{self.server.port}"

    def describe(self) -> str:
        """Where it serves, for a technician or the demo."""
        units = ",".join(map(str, sorted(self.units)))
        pty = self.server.device_pty
        if pty is not None:
            where = f"RTU on {pty.path}" + (f" (symlink {pty.link})" if pty.link else "")
        elif self.cfg.transport == "rtu-tcp":
            where = f"RTU over TCP on {self.url}"
        else:
            where = f"Modbus TCP on {self.cfg.host}:{self.server.port}"
        return f"Modbus scale {where}, units {units}"

    # ---- the platforms -----------------------------------------------------------
    def place(self, unit: int, grams: float, motion_s: float = 0.0) -> float:
        """Put ``grams`` on ``unit`` by hand; returns the weight as the indicator shows it."""
        with self._lock:
            return self.models[unit].place(grams, time.monotonic(), motion_s)

    def state(self, unit: int) -> State:
        """What ``unit`` shows now (the server calls this on every request)."""
        with self._lock:
            return self.models[unit].state(time.monotonic())

    def run_auto(self) -> None:
        """Let parcels come and go by themselves from now on (every unit)."""
        with self._lock:
            for model in self.models.values():
                model.resume(time.monotonic())

    def clear(self, unit: int) -> None:
        """Empty ``unit``'s platform (manual mode)."""
        with self._lock:
            self.models[unit].clear(time.monotonic())

    def settled(self, unit: int, until: float = math.inf) -> list[float]:
        """Weights that settled on ``unit`` (stable window starting before ``until``)."""
        self._advance()
        return [t.grams for t in self.truth if t.unit == unit and t.kind == "settled"
                and t.start < until and t.grams is not None]  # fmt: skip

    def _advance(self) -> None:
        now = time.monotonic()
        with self._lock:
            for model in self.models.values():
                model.advance(now)

    def _settled(self, unit: int, kind: str, grams: float, start: float, end: float) -> None:
        self._record(Truth(0, unit, kind, grams, start, end, wall=time.time()))

    def _record(self, t: Truth) -> None:
        with self._tlock:
            t = replace(t, n=len(self.truth) + 1)
            self.truth.append(t)
            if self._truth_file:
                self._truth_file.write(json.dumps(asdict(t)) + "\n")
                self._truth_file.flush()

    # ---- faults ------------------------------------------------------------------
    def inject(self, unit: int, fault: str, count: int = 1, code: int | None = None) -> None:
        """The next ``count`` responses of ``unit`` get ``fault`` (``exception``: ``code``)."""
        if fault not in (*BYTE_FAULTS, "exception"):
            msg = f"one-shot faults: {', '.join(BYTE_FAULTS)}, exception"
            raise ValueError(msg)
        with self._lock:
            self._oneshot[unit] += [(fault, code)] * count

    def silence(self, unit: int, on: bool = True) -> None:
        """``unit`` stops answering (on) or answers again (off)."""
        with self._lock:
            (self._silent.add if on else self._silent.discard)(unit)
        self._fault(unit, "silence_on" if on else "silence_off")

    def _fault(self, unit: int, name: str) -> None:
        now = time.monotonic()
        self._record(Truth(0, unit, "fault", None, now, now, name, time.time()))

    def _take(self, unit: int, kinds: tuple[str, ...]) -> tuple[str, int | None] | None:
        with self._lock:
            queue = self._oneshot[unit]
            for i, (name, code) in enumerate(queue):
                if name in kinds:
                    del queue[i]
                    return name, code
        faults = self._unit_faults.get(unit, self.cfg.faults)
        for name in kinds:
            if self.rng.random() < faults.get(name, 0.0):
                return name, None
        return None

    def set_faults(self, unit: int, faults: dict[str, float] | None) -> None:
        """Fault probabilities for ``unit`` alone (None: back to ``cfg.faults``)."""
        unknown = set(faults or {}) - set(BYTE_FAULTS) - {"exception"}
        if unknown:
            msg = f"unknown fault modes {sorted(unknown)}; valid: {', '.join(BYTE_FAULTS)}"
            raise ValueError(msg)
        with self._lock:
            if faults is None:
                self._unit_faults.pop(unit, None)
            else:
                self._unit_faults[unit] = dict(faults)

    def take_exception(self, unit: int) -> int | None:
        """An exception code to answer ``unit``'s request with, if one is due."""
        hit = self._take(unit, ("exception",))
        if hit is None:
            return None
        code = hit[1] if hit[1] is not None else self.rng.choice(EXCEPTION_CODES)
        self._fault(unit, f"exception_{code:02x}")
        return code

    def take_byte_fault(self, unit: int) -> str | None:
        """A byte-level fault for ``unit``'s response being sent, if one is due."""
        if unit in self._silent:
            return "silent"
        hit = self._take(unit, BYTE_FAULTS)
        if hit is not None:
            self._fault(unit, hit[0])
        return None if hit is None else hit[0]

    def fault_count(self, unit: int, name: str) -> int:
        """How many times ``name`` was injected into ``unit``'s responses."""
        return sum(t.kind == "fault" and t.unit == unit and t.detail == name for t in self.truth)

    # ---- link faults ---------------------------------------------------------------
    def reset_connections(self) -> None:
        """TCP: RST every client connection."""
        self._fault(0, "tcp_reset")
        self.server.reset_connections()

    def unplug(self) -> None:
        """Pull the cable: RTU pty and symlink vanish; TCP server resets and stops."""
        self._fault(0, "unplug")
        self.server.unplug()

    def replug(self) -> None:
        """Plug back in (RTU: a new pty behind the same symlink; TCP: same port)."""
        self.server.replug()
        self._fault(0, "replug")
