"""Shared parts of the scale simulators: weight model, truth records, fault-injecting pty runner.

Weight model (docs/protocols.md §3.5, [D/U]): empty (0) -> load -> motion (damped oscillation,
±0.5-3 % for 200-800 ms) -> stable (the quantised target) -> unload (short motion) -> empty.
Parcels weigh 50 g - 30 kg (log-uniform), quantised to the division ``step`` (counts of the
last displayed digit). ``overload`` puts a parcel above Max + 9 d; ``underload`` makes an empty
period read below zero. Zero and tare act on the displayed weight as an indicator does.

Faults (docs/protocols.md §0, each a seedable probability per frame): ``garble`` (bit flips),
``partial`` (frame cut off), ``noise`` (0x00/0xFF burst between frames), ``fragment`` (frame in
1-5 chunks), ``coalesce`` (several streamed frames in one write), ``stall`` (connected but
silent for ``stall_s``), ``overload``, ``underload``; ``unplug()`` replugs under a new pty.

Every frame written is a :class:`Truth`; ``settled`` marks the first clean stable frame of a
parcel, which is what a driver publishing on settle must publish, once.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

from simulators import DemoDevice, announce, check_faults, demo_port, parse_faults, serve
from simulators.emitter import Emitter, fragments, write_all
from simulators.pty_port import PtyPort

#: Grams per unit, exact (1 lb = 453.59237 g, 1 oz = 1/16 lb).
GRAMS_PER_UNIT = {"g": Decimal(1), "kg": Decimal(1000), "lb": Decimal("453.59237"),
                  "oz": Decimal("28.349523125")}  # fmt: skip
FAULTS = ("garble", "partial", "noise", "fragment", "coalesce", "stall", "overload", "underload")


@dataclass(frozen=True)
class Display:
    """How the indicator shows weights: unit, decimals, division (``step`` counts), Max."""

    unit: str = "kg"
    decimals: int = 3
    step: int = 5
    capacity_g: float = 30000.0

    def __post_init__(self) -> None:
        bad = self.step not in (1, 2, 5) or not 0 <= self.decimals <= 5
        if bad or self.unit not in GRAMS_PER_UNIT:
            msg = f"display {self.unit!r}/{self.decimals} decimals/step {self.step} not supported"
            raise ValueError(msg)

    def text(self, counts: int) -> str:
        """``counts`` of the last digit as the scale prints them, e.g. 1234 -> ``1.234``."""
        return format(Decimal(counts).scaleb(-self.decimals), "f")

    def grams(self, counts: int) -> float:
        """Exact grams of ``counts`` (the oracle the tests compare drivers with)."""
        return float(Decimal(counts).scaleb(-self.decimals) * GRAMS_PER_UNIT[self.unit])

    def counts(self, grams: float) -> int:
        """``grams`` quantised to the division."""
        per_count = float(GRAMS_PER_UNIT[self.unit].scaleb(-self.decimals))
        return round(grams / per_count / self.step) * self.step

    @property
    def max_counts(self) -> int:
        """Max (capacity) in counts, rounded down to the division."""
        per_count = float(GRAMS_PER_UNIT[self.unit].scaleb(-self.decimals))
        return math.floor(self.capacity_g / per_count / self.step) * self.step


@dataclass(frozen=True)
class Timing:
    """Durations (min, max) in seconds of the model's phases."""

    empty_s: tuple[float, float] = (0.4, 1.2)
    motion_s: tuple[float, float] = (0.2, 0.8)
    hold_s: tuple[float, float] = (0.8, 2.0)
    unload_s: tuple[float, float] = (0.15, 0.4)


@dataclass(frozen=True)
class Sample:
    """What the indicator shows at one instant."""

    counts: int
    stable: bool
    parcel: int  # 0: empty platform
    over: bool
    under: bool
    net: bool


class WeightModel:
    """Parcels on a platform over time. Thread-safe (the sim thread samples, tests place).

    Args:
        display: unit, decimals, division and Max.
        timing: phase durations.
        rng: seeded random source.
        faults: probabilities of ``overload`` and ``underload``.
        auto: parcels come and go by themselves; False: only :meth:`place` changes the load.
    """

    def __init__(self, display: Display, timing: Timing, rng: random.Random,
                 faults: dict[str, float], auto: bool = True) -> None:  # fmt: skip
        self.d, self.timing, self.rng, self.faults, self.auto = display, timing, rng, faults, auto
        self._lock = threading.Lock()
        self.parcels = 0
        self._phase, self._until, self._t0 = "empty", time.monotonic(), time.monotonic()
        self._from = self._to = self._amp = self._empty = self._zero = self._tare = 0
        self._parcel = 0

    def _span(self, rng: tuple[float, float]) -> float:
        return self.rng.uniform(*rng)

    def _go(self, phase: str, to: int, now: float, dur: float) -> None:
        self._from = self._gross(now)
        self._phase, self._to, self._t0, self._until = phase, to, now, now + dur
        swing = max(abs(to - self._from), 1) * self.rng.uniform(0.005, 0.03)
        self._amp = round(swing) + 2 * self.d.step

    def _next(self, now: float) -> None:
        t = self.timing
        if self._phase == "empty":
            self.parcels += 1
            self._parcel = self.parcels
            grams = math.exp(self.rng.uniform(math.log(50), math.log(30000)))
            to = min(self.d.counts(grams), self.d.max_counts)
            if self.rng.random() < self.faults.get("overload", 0):
                to = self.d.max_counts + self.rng.randrange(10, 200) * self.d.step
            self._go("load", to, now, self._span(t.motion_s))
        elif self._phase == "load":
            self._phase, self._until = "stable", now + self._span(t.hold_s)
        elif self._phase == "stable":
            self._go("unload", self._empty, now, self._span(t.unload_s))
        else:
            under = self.rng.random() < self.faults.get("underload", 0)
            self._empty = -self.rng.randrange(21, 60) * self.d.step if under else 0
            self._phase, self._to, self._parcel = "empty", self._empty, 0
            self._until = now + self._span(t.empty_s)

    def _gross(self, now: float) -> int:
        if self._phase in ("empty", "stable"):
            return self._to
        x = now - self._t0
        decay = math.exp(-4 * x / max(self._until - self._t0, 1e-3))
        wobble = self._amp * decay * math.sin(2 * math.pi * 4 * x)
        raw = self._to + (self._from - self._to) * decay * 0.3 + wobble
        return round(raw / self.d.step) * self.d.step

    def sample(self, now: float) -> Sample:
        """The display at ``now`` (monotonic seconds)."""
        with self._lock:
            while now >= self._until and (self.auto or self._phase in ("load", "unload")):
                if not self.auto:
                    self._phase = "stable" if self._phase == "load" else "empty"
                    self._until = math.inf
                    break
                self._next(now)
            gross = self._gross(now) - self._zero
            shown = gross - self._tare
            stable = self._phase in ("empty", "stable")
            over = gross > self.d.max_counts + 9 * self.d.step
            parcel = self._parcel if self._phase != "empty" else 0
            return Sample(shown, stable, parcel, over, shown < -20 * self.d.step, self._tare != 0)

    def place(self, grams: float, settle: bool = True) -> int:
        """Put a load of ``grams`` on the platform (manual mode); returns its quantised counts."""
        now = time.monotonic()
        with self._lock:
            to = self.d.counts(grams) + self._zero
            self.parcels += 1
            self._parcel = self.parcels if grams else 0
            self._go("load" if settle else "stable", to, now, self._span(self.timing.motion_s))
            if not settle:
                self._until = math.inf
            return to - self._zero

    def zero(self) -> str:
        """Zero key / command: "A" done, "I" moving, "+"/"-" outside ±2 % of Max."""
        s = self.sample(time.monotonic())
        with self._lock:
            if not s.stable:
                return "I"
            gross = s.counts + self._tare
            if abs(gross) > self.d.max_counts // 50:
                return "+" if gross > 0 else "-"
            self._zero += gross
            return "A"

    def tare(self) -> tuple[str, int]:
        """Tare key / command: ("S", tare counts) done, ("I", 0) moving or not positive."""
        s = self.sample(time.monotonic())
        with self._lock:
            if not s.stable or s.over or s.counts + self._tare <= 0:
                return "I", 0
            self._tare = s.counts + self._tare
            return "S", self._tare

    @property
    def tare_counts(self) -> int:
        """The stored tare, counts."""
        return self._tare

    def clear_tare(self) -> None:
        """Clear the tare (back to gross)."""
        with self._lock:
            self._tare = 0


@dataclass(frozen=True)
class Truth:
    """One frame the simulator wrote (or tried to): what it says and whether it arrived."""

    n: int
    kind: str  # weight | motion | noise | partial | stall | <the driver's reject reason>
    parcel: int
    grams: float | None
    unit: str | None
    settled: bool
    delivered: bool
    t: float


@dataclass
class ScaleSimConfig:
    """What every scale simulator shares: display, timing, stream rate, seed and faults."""

    display: Display = field(default_factory=Display)
    timing: Timing = field(default_factory=Timing)
    rate: float = 10.0
    seed: int = 1
    auto: bool = True
    stall_s: float = 1.5
    faults: dict[str, float] = field(default_factory=dict)


class ScaleSim(Emitter[Truth]):
    """Base of the scale simulators: one thread answering commands and/or streaming frames.

    Subclasses define the bytes: :meth:`split` (host commands), :meth:`on_command`,
    :meth:`encode` (a sample as a frame plus its truth kind) and optionally :meth:`garble`;
    a command that waits for a stable weight sets ``_wait_stable`` (a deadline) and defines
    :meth:`unstable_reply`. ``CONFIG`` is the config class :meth:`run_cli` and :meth:`demo` build.

    Args:
        port: the pty to serve (plugged by ``start()`` if needed).
        cfg: display, timing, rate, seed and faults.
        truth_file: optional JSONL file receiving every :class:`Truth`.
    """

    FAULTS: ClassVar[tuple[str, ...]] = FAULTS
    CONFIG: ClassVar[type[ScaleSimConfig]] = ScaleSimConfig
    #: Silence after a cut-off streamed frame, s: a frame with no start byte ends only by a
    #: timeout. (A polled device answers the next poll only after the host gave up on it.)
    PARTIAL_GAP_S: ClassVar[float] = 0.0

    def __init__(self, port: PtyPort, cfg: ScaleSimConfig, truth_file: Path | None = None) -> None:
        check_faults(cfg.faults, self.FAULTS)
        super().__init__(truth_file)
        self.port, self.cfg = port, cfg
        self.rng = random.Random(cfg.seed)
        rng = random.Random(cfg.seed + 7)
        self.model = WeightModel(cfg.display, cfg.timing, rng, cfg.faults, cfg.auto)
        self.commands: list[bytes] = []
        self.streaming = False
        self._inbuf = b""
        self._held: list[tuple[bytes, Truth]] = []
        self._settled: set[int] = set()
        self._forced: set[str] = set()
        self._cut = False
        self._stall_until = self._next_frame = 0.0
        self._wait_stable: float | None = None  # a command answers once stable or by then
        self._paused = threading.Event()
        self._lock = threading.RLock()

    # ---- protocol hooks ----------------------------------------------------------------
    def split(self, buf: bytes) -> tuple[list[bytes], bytes]:
        """Complete host commands in ``buf`` and the rest (default: CR LF lines)."""
        *lines, rest = buf.split(b"\n")
        return [ln.rstrip(b"\r") for ln in lines], rest

    def on_command(self, cmd: bytes, now: float) -> None:
        """Act on one host command (default: ignore)."""

    def encode(self, s: Sample) -> tuple[bytes, str]:
        """``s`` as a frame and its truth kind (``weight``, ``motion`` or a reject reason)."""
        raise NotImplementedError

    def unstable_reply(self) -> tuple[bytes, str]:
        """The reply when ``_wait_stable`` passes without a stable weight, and its truth kind."""
        raise NotImplementedError

    def garble(self, frame: bytes) -> tuple[bytes, str]:
        """Set bit 7 of one payload byte (no checksum: only a non-ASCII byte is detectable)."""
        # a short reply (SMA's 3-byte \n?\r) still has one payload byte to garble
        i = self.rng.randrange(1, max(2, len(frame) - 2))
        return frame[:i] + bytes([frame[i] | 0x80]) + frame[i + 1 :], "garbled"

    def on_replug(self) -> None:
        """Called after a replug (a power cycle of the device)."""
        self.streaming = False

    # ---- frames and faults ------------------------------------------------------------
    def send_sample(self, now: float | None = None) -> Truth | None:
        """Encode the current display and write it with the configured faults."""
        s = self.model.sample(time.monotonic() if now is None else now)
        frame, kind = self.encode(s)
        return self.emit(frame, kind, s)

    def inject(self, fault: str) -> None:
        """Apply ``fault`` to the next frame written, whatever its probability."""
        if fault not in self.FAULTS:
            msg = f"unknown fault {fault!r}; valid: {', '.join(self.FAULTS)}"
            raise ValueError(msg)
        self._forced.add(fault)

    def _hit(self, fault: str) -> bool:
        roll = self.rng.random() < self.cfg.faults.get(fault, 0)  # drawn always: same sequence
        forced = fault in self._forced
        self._forced.discard(fault)
        return roll or forced

    def emit(self, frame: bytes, kind: str, s: Sample | None) -> Truth | None:
        """Write one frame, applying faults; returns its truth (None: held or stalled)."""
        with self._lock:
            if self._hit("stall"):
                self._stall_until = time.monotonic() + self.cfg.stall_s
                return self._record(self._truth("stall", s), False)
            if self._hit("noise") and not self._cut:  # after a cut-off frame it joins its tail
                self.flush()
                self._record(self._truth("noise", None), self._send(self._noise()))
            if self._hit("garble"):
                frame, kind = self.garble(frame)
            if self._hit("partial") and len(frame) > 3:
                self.flush()
                ok = self._send(frame[: self.rng.randrange(2, len(frame) - 1)])
                time.sleep(self.PARTIAL_GAP_S if self.streaming else 0)  # polled: the host waits
                self._cut = True
                return self._record(self._truth("partial", s), ok)
            self._cut = False
            t = self._truth(kind, s)
            if self.streaming and self._hit("coalesce") and len(self._held) < 4:
                self._held.append((frame, t))
                return None
            batch, self._held = [*self._held, (frame, t)], []
            ok = self._send(b"".join(b for b, _ in batch), fragment=self._hit("fragment"))
            for _, held in batch:
                self._record(held, ok)
            return t

    def flush(self) -> None:
        """Write frames held back for coalescing."""
        with self._lock:
            batch, self._held = self._held, []
            if batch:
                ok = self._send(b"".join(b for b, _ in batch))
                for _, t in batch:
                    self._record(t, ok)

    def _truth(self, kind: str, s: Sample | None) -> Truth:
        counted = s is not None and kind in ("weight", "motion")
        grams = self.cfg.display.grams(s.counts) if counted and s else None
        if grams is not None and abs(grams) > self.cfg.display.capacity_g:
            kind, grams, counted = "out_of_range", None, False  # a driver's Max check rejects it
        unit = self.cfg.display.unit if counted else None
        parcel = s.parcel if s else 0
        return Truth(len(self.truth), kind, parcel, grams, unit, False, False, time.time())

    def _record(self, t: Truth, ok: bool) -> Truth:
        settled = ok and t.kind == "weight" and t.parcel > 0 and t.parcel not in self._settled
        if settled:
            self._settled.add(t.parcel)
        t = Truth(t.n, t.kind, t.parcel, t.grams, t.unit, settled, ok, t.t)
        self.record(t)
        return t

    def _noise(self) -> bytes:
        return bytes(self.rng.choice(b"\x00\xff") for _ in range(self.rng.randrange(1, 8)))

    def _send(self, data: bytes, *, fragment: bool = False) -> bool:
        chunks = fragments(self.rng, data, fragment)
        deadline = time.monotonic() + 1.0
        return write_all(self.port.write, chunks, deadline, lambda: self.rng.uniform(0.001, 0.01))

    # ---- running -----------------------------------------------------------------------
    def tick(self, now: float) -> None:
        """Called every few ms while not stalled: stream a frame when one is due; answer a
        command waiting for a stable weight once it is stable (or the reply for its timeout)."""
        if self.streaming and now >= self._next_frame:
            self._next_frame = max(self._next_frame + 1 / self.cfg.rate, now)
            self.send_sample(now)
        if self._wait_stable is None:
            return
        s = self.model.sample(now)
        if s.stable or s.over or s.under:
            self._wait_stable = None
            self.emit(*self.encode(s), s)
        elif now > self._wait_stable:
            self._wait_stable = None
            self.emit(*self.unstable_reply(), None)

    def _loop(self) -> None:
        while not self._stop.is_set():
            if self._paused.is_set():
                self._stop.wait(0.01)
                continue
            now = time.monotonic()
            cmds, self._inbuf = self.split(self._inbuf + self.port.read())
            for cmd in cmds:
                self.commands.append(cmd)
                if now >= self._stall_until:
                    self.on_command(cmd, now)
            if now >= self._stall_until:
                self.tick(now)
            self._stop.wait(0.003)
        self.flush()

    def start(self) -> None:
        """Serve the port in a thread until :meth:`stop`."""
        if self.port.master is None:
            self.port.plug()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="scale-sim")
        self._thread.start()

    def unplug(self, seconds: float) -> None:
        """Pull the cable for ``seconds``, then replug under a new pty (device power-cycles)."""
        self._paused.set()
        time.sleep(0.02)
        with self._lock:
            self._held = []
            self.port.unplug()
        time.sleep(seconds)
        self._inbuf = b""
        self.on_replug()
        self.port.plug()
        self._paused.clear()

    def settled(self) -> list[Truth]:
        """Settled weights delivered so far: what the agent must publish, in order."""
        return [t for t in self.truth if t.settled]

    @classmethod
    def demo(cls, name: str, link: str, capacity_g: float, rate: float, seed: int,
             faults: dict[str, float], **extra: Any) -> DemoScale:  # fmt: skip
        """A simulator of this class behind ``link`` (a configured port path) for the demo: a
        kg display to 3 decimals in steps of 5, :data:`DEMO_FAULTS` plus ``faults``."""
        sim_cfg = cls.CONFIG(display=Display("kg", 3, 5, capacity_g), rate=rate, seed=seed,
                             faults={**DEMO_FAULTS, **faults}, **extra)  # fmt: skip
        return DemoScale(name, cls(demo_port(link), sim_cfg))

    @classmethod
    def run_cli(cls, args: argparse.Namespace, **extra: Any) -> int:
        """Run by hand (:func:`cli_parser`'s arguments, ``extra`` config fields) on a new pty."""
        cfg = cli_config(args, cls.CONFIG, **extra)
        return cli_run(cls(PtyPort(args.link), cfg, args.truth), args.seconds)


class DemoScale(DemoDevice[ScaleSim]):
    """A :class:`ScaleSim` standing in for a configured scale (``for_demo``)."""

    def __init__(self, name: str, sim: ScaleSim) -> None:
        super().__init__(sim)
        self.name = name

    def expected(self) -> int:
        """Settled weights delivered: one reading each."""
        return len(self.sim.settled())

    def describe(self) -> str:
        """What is simulated, where."""
        return f"{self.name} on {self.sim.port.path} (symlink {self.sim.port.link})"


#: Faults the demo injects, so its output shows rejects being counted.
DEMO_FAULTS = {"noise": 0.02, "garble": 0.02, "fragment": 0.2, "coalesce": 0.05, "overload": 0.05}


def cli_parser(prog: str, doc: str | None) -> argparse.ArgumentParser:
    """The arguments every scale simulator takes."""
    p = argparse.ArgumentParser(prog=f"python -m simulators.{prog}", description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--link", type=Path, help="stable symlink to the pty (like /dev/serial/by-id)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--unit", choices=sorted(GRAMS_PER_UNIT), default="kg")
    p.add_argument("--decimals", type=int, default=3, help="decimals shown (kg: 3)")
    p.add_argument("--step", type=int, choices=[1, 2, 5], default=5, help="division, in counts")
    p.add_argument("--capacity-g", type=float, default=30000.0, help="Max, grams")
    p.add_argument("--rate", type=float, default=10.0, help="streamed frames/s")
    p.add_argument("--faults", default="", help="e.g. noise=0.05,garble=0.02,stall=0.01")
    p.add_argument("--truth", type=Path, help="append every frame written to this JSONL file")
    p.add_argument("--seconds", type=float, default=0, help="stop after N s (0: at ^C)")
    return p


def cli_config(args: argparse.Namespace, cls: type[ScaleSimConfig] = ScaleSimConfig,
               **extra: Any) -> ScaleSimConfig:  # fmt: skip
    """The simulator config the common arguments describe."""
    faults = parse_faults(args.faults)
    display = Display(args.unit, args.decimals, args.step, args.capacity_g)
    return cls(display=display, rate=args.rate, seed=args.seed, faults=faults, **extra)


def cli_run(sim: ScaleSim, seconds: float) -> int:
    """Print the pty path, serve until ``seconds`` pass or ^C; returns the exit code."""
    print(sim.port.path if sim.port.master is not None else sim.port.plug(), flush=True)
    if sim.port.link:
        print(f"symlink {sim.port.link} -> {sim.port.path}", file=sys.stderr, flush=True)
    announce(str(sim.port.link) if sim.port.link else sim.port.path)
    sim.start()
    return serve(
        lambda: threading.Event().wait(seconds if seconds > 0 else None), sim.stop, sim.port.close
    )
