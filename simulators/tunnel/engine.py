"""The engine shared by the tunnel scanner simulators: SICK CLV, Cognex DataMan, Datalogic.

It lives in ``simulators/sick_clv/`` only because of file ownership, and should move to
``simulators/tunnel.py``. A :class:`TunnelSim` owns one port (:class:`TcpPort` or
:class:`~simulators.pty_port.PtyPort`), a seeded RNG and one thread. Device subclasses supply
``result(n)`` (the telegram of gate ``n`` and its :class:`Truth`), ``garble(data)`` (a
corruption the driver can detect) and, optionally, ``on_input`` (host commands) and
``heartbeat_frame``.

Gates are triggered by the simulator at ``rate`` (``trigger = "self"``, the photo-eye) or only
by host commands (``trigger = "command"``). Fault modes (docs/protocols.md §0.3) are each a
probability per gate, drawn from the seeded RNG:

``fragment`` (1-5 chunks, gaps of 1-20 ms), ``coalesce`` (up to 4 telegrams in one write), ``noise``
(a 0x00/0xFF/junk burst), ``garble``, ``partial`` (a telegram cut off, then a fresh one),
``noread``, ``late`` (gate N sent after gate N+1), ``duplicate`` (a telegram sent twice),
``stall`` (silent, heartbeat included, for ``stall_s``), and ``disconnect`` (a telegram cut by a
TCP RST or a pty unplug, back after ``unplug_s``).

Every telegram and fault goes into :attr:`TunnelSim.truth` (and optionally a JSONL file).
:meth:`readings` lists what the agent must publish, and :meth:`rejects` lists what it must
count.
"""

from __future__ import annotations

import abc
import random
import threading
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

from simulators.emitter import Emitter, fragments, write_all
from simulators.tunnel.model import FAULTS, SimConfig, SimPort, Truth
from simulators.tunnel.tcp_client import TcpClientPort
from simulators.tunnel.tcp_port import TcpPort


class TunnelSim(Emitter[Truth], abc.ABC):
    """A tunnel scanner writing telegrams to a port, with seeded faults.

    Args:
        port: TCP or pty port (plugged by ``start()`` if needed).
        cfg: the device's simulator config.
        truth_file: optional JSONL file receiving every :class:`Truth`.
    """

    #: Device-specific fault names, on top of :data:`FAULTS`.
    EXTRA_FAULTS: ClassVar[tuple[str, ...]] = ()
    JOIN_S = 10.0

    def __init__(self, port: SimPort, cfg: SimConfig, truth_file: Path | None = None) -> None:
        unknown = set(cfg.faults) - set(FAULTS) - set(self.EXTRA_FAULTS)
        if unknown or cfg.trigger not in ("self", "command"):
            msg = f"unknown faults {sorted(unknown)} or trigger {cfg.trigger!r}"
            raise ValueError(msg)
        super().__init__(truth_file)
        self.port, self.cfg = port, cfg
        #: Bytes a noise burst is drawn from (line protocols: only bytes the framer skips).
        self.noise = b"\x00\xff~#\r\n"
        #: Line protocols end a cut-off telegram by silence, STX protocols by the next STX.
        self.partial_gap = False
        self.rng = random.Random(cfg.seed)
        self.emitted = 0
        self._held: list[tuple[bytes, Truth]] = []
        self._late: tuple[bytes, Truth] | None = None
        self._last_tx = time.monotonic()

    @abc.abstractmethod
    def result(self, n: int) -> tuple[bytes, Truth]:
        """The telegram of gate ``n`` and its truth (kind ``result``), not yet written."""

    @abc.abstractmethod
    def garble(self, data: bytes) -> tuple[bytes, str]:
        """``data`` corrupted so the driver can tell, and the reject reason it will count."""

    def heartbeat_frame(self) -> bytes | None:
        """The heartbeat telegram, or None for a device without one."""
        return None

    def on_input(self, data: bytes) -> None:
        """Bytes from the host (commands). Default: ignored."""
        del data

    def roll(self, fault: str) -> bool:
        """Draw whether ``fault`` happens now."""
        return self.rng.random() < self.cfg.faults.get(fault, 0.0)

    # ---- one gate --------------------------------------------------------------------
    def emit(self) -> Truth:
        """Trigger one gate and write its telegram, applying the configured faults."""
        self.emitted += 1
        if self.roll("stall"):
            self.settle()
            self.record(Truth(0, "stall", delivered=True, t=time.time()))
            self._stop.wait(self.cfg.stall_s)
        data, truth = self.result(self.emitted)
        if not data:  # a device that sends nothing for a no-read
            self.record(replace(truth, delivered=True))
            return truth
        if self.roll("disconnect"):
            self._disconnect(data)
            self.record(replace(truth, kind="cut", values=(), reasons=()))
            return truth
        if self._late is None and self.roll("noise"):
            self.flush()
            burst = bytes(self.rng.choice(self.noise) for _ in range(self.rng.randrange(1, 8)))
            self.fault(burst, "noise")
        force = self.roll("partial")
        if force:
            self.flush()
            self.fault(self._cut(data), "partial")
            if self.partial_gap:  # not cut short by stop(): the silence is what ends the line
                time.sleep(self.cfg.inter_byte_s * 3)
        if self.roll("garble"):
            data, reason = self.garble(data)
            truth = replace(truth, kind="fault", values=(), reasons=(*truth.reasons, reason))
        if not force and self._late is None and truth.kind == "result" and self.roll("late"):
            self._late = (data, truth)
            return truth
        self.out(data, truth, force=force)
        if self._late is not None:
            late, self._late = self._late, None
            self.out(*late)
        if truth.kind == "result" and self.roll("duplicate"):
            counted = truth.gate is not None  # the driver drops repeats of a counted gate
            extra = ("duplicate",) if counted else ()
            values = () if counted else truth.values
            dup = replace(truth, kind="duplicate", values=values, reasons=truth.reasons + extra)
            self.out(data, dup)
        return truth

    def fault(self, data: bytes, reason: str) -> None:
        """Write bytes the driver must reject as ``reason``."""
        self.record(Truth(0, "fault", reasons=(reason,), delivered=self.send(data), t=time.time()))

    def out(self, data: bytes, truth: Truth, *, force: bool = False) -> None:
        """Queue one telegram; coalescing holds it back to share a write with the next."""
        self._held.append((data, truth))
        if not force and len(self._held) < 4 and self.roll("coalesce"):
            return
        self.flush()

    def flush(self) -> None:
        """Write the telegrams held back for coalescing, in one write."""
        batch, self._held = self._held, []
        if batch:
            ok = self.send(b"".join(d for d, _ in batch), fragment=self.roll("fragment"))
            for _, t in batch:
                self.record(replace(t, delivered=ok))

    def settle(self) -> None:
        """Write everything held back (late telegram included) before a stall or disconnect."""
        self.flush()
        if self._late is not None:
            late, self._late = self._late, None
            self.out(*late, force=True)

    def _disconnect(self, data: bytes) -> None:
        self.settle()
        self._stop.wait(0.2)  # let the host read what was sent before the cable goes
        self.send(self._cut(data))
        self.port.unplug()
        self._stop.wait(self.cfg.unplug_s)
        self.port.plug()

    @staticmethod
    def _cut(data: bytes) -> bytes:
        cut = data[: max(1, len(data) // 2)]  # never a whole frame: "\r\n" is cut to "\r"
        while cut.startswith(b"\x02\x02"):  # a doubled STX would add a partial reject of its own
            cut = cut[1:]
        return cut

    def send(self, data: bytes, *, fragment: bool = False) -> bool:
        """Write ``data`` (in chunks if ``fragment``), waiting for a host up to client_wait_s."""
        chunks = fragments(self.rng, data, fragment)
        deadline = time.monotonic() + self.cfg.client_wait_s
        gap = min(0.02, self.cfg.inter_byte_s / 5)
        ok = write_all(self.port.write, chunks, deadline, lambda: self.rng.uniform(0.001, gap),
                       self._stop.is_set)  # fmt: skip
        if ok:
            self._last_tx = time.monotonic()
        return ok

    # ---- what the agent must see -----------------------------------------------------
    def readings(self) -> list[tuple[str, str | None, int | None]]:
        """(kind, value, gate) of every reading the agent must publish, in write order."""
        return [
            ("noread" if v is None else "barcode", v, t.gate)
            for t in self.truth
            if t.delivered
            for v in t.values
        ]

    def rejects(self) -> Counter[str]:
        """Reject reasons the agent must count, for what was delivered."""
        return Counter(r for t in self.truth if t.delivered for r in t.reasons)

    # ---- running ---------------------------------------------------------------------
    def start(self, count: int = 0) -> None:
        """Run in a thread: ``count`` self-triggered gates (0: until ``stop()``)."""
        if (
            isinstance(self.port, TcpPort | TcpClientPort)
            or getattr(self.port, "master", 0) is None
        ):
            self.port.plug()  # TCP plug() is idempotent; a PtyPort is plugged once
        self._thread = threading.Thread(target=self._loop, args=(count,), daemon=True)
        self._thread.start()

    def _loop(self, count: int) -> None:
        period = 1.0 / self.cfg.rate if self.cfg.rate > 0 else 1.0
        next_t = time.monotonic()
        while not self._stop.is_set():
            data = self.port.read()
            if data:
                self.on_input(data)
            now = time.monotonic()
            if self.cfg.trigger == "self" and now >= next_t:
                if count and self.emitted >= count:
                    break
                self.emit()
                next_t = max(next_t + period, time.monotonic() - 1.0)
            self._heartbeat()
            # poll commands every 10 ms; a self-triggered gate may be due sooner (with
            # trigger = "command" next_t never advances: waiting until it would spin)
            due = next_t - time.monotonic() if self.cfg.trigger == "self" else 0.01
            self._stop.wait(min(0.01, max(0.0, due)))
        self.settle()

    def _heartbeat(self) -> None:
        hb, every = self.heartbeat_frame(), self.cfg.heartbeat_s
        due = every and time.monotonic() - self._last_tx >= every
        if hb and due and getattr(self.port, "connected", True):
            self.record(Truth(0, "heartbeat", delivered=self.send(hb), t=time.time()))
