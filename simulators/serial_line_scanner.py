"""Simulator of a serial line scanner (fixed tunnel scanner or handheld in CDC/RS-232 mode).

Speaks the bytes ``drivers/serial_line_scanner.py`` reads, over a real pty::

    STX [prefix] []C0] SF1000000000001 [suffix] ETX       (framing stx_etx)
    [prefix] []C0] SF1000000000001 [suffix] CR LF          (framing terminator)

Codes are courier waybills (SF, YTO, J&T, ZTO, GS1 SSCC), unique per simulator and seed. Fault
modes (each a probability per reading, seedable): ``fragment`` (a frame in 1-5 chunks with short
gaps), ``coalesce`` (several frames in one write), ``noise`` (a burst of 0x00/0xFF/junk between
frames), ``garble`` (a control byte inside a frame), ``partial`` (a frame cut off), ``noread``
(the configured no-read text); plus ``unplug()``/replug under a new pty behind the same symlink,
or ``pull()``/``replug()`` while emitting goes on (T10: what is scanned while the cable is out is
lost, as with a real pulled cable, when ``lose_unplugged`` is set).

Every item written is recorded in :attr:`ScannerSim.truth` (and optionally a JSONL file), so a
test can compare what the agent published with what the device sent.

Run by hand::

    python -m simulators.serial_line_scanner --link /tmp/scanner-1 --rate 5 --faults noise=0.1
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from drivers.serial_line_scanner import SerialLineScannerConfig
from simulators import DemoDevice, announce, check_faults, demo_port, parse_faults, serve
from simulators.emitter import Emitter, fragments, write_all
from simulators.pty_port import PtyPort

STX, ETX = b"\x02", b"\x03"
TERMINATORS = {"CR": b"\r", "LF": b"\n", "CRLF": b"\r\n"}
FAULTS = ("fragment", "coalesce", "noise", "garble", "partial", "noread")


@dataclass(frozen=True)
class Truth:
    """One item the simulator wrote: a reading (barcode/noread) or a fault the agent must reject."""

    n: int
    kind: str  # barcode | noread | garbled | partial | noise
    value: str | None
    aim: str | None
    delivered: bool
    t: float


@dataclass
class ScannerSimConfig:
    """How the simulated scanner frames its output and which faults it injects."""

    framing: str = "terminator"
    terminator: str = "CRLF"
    prefix: str = ""
    suffix: str = ""
    noread: str = "NoRead"
    aim: bool = True
    rate: float = 5.0
    seed: int = 1
    scanner_no: int = 1
    inter_byte_timeout_s: float = 0.1
    faults: dict[str, float] = field(default_factory=dict)
    #: A frame emitted while unplugged is lost at once (else it waits up to 1 s for a replug).
    lose_unplugged: bool = False

    def __post_init__(self) -> None:
        check_faults(self.faults, FAULTS)
        if self.framing not in ("terminator", "stx_etx") or self.terminator not in TERMINATORS:
            msg = f"framing {self.framing!r} / terminator {self.terminator!r} not supported"
            raise ValueError(msg)


class ScannerSim(Emitter[Truth]):
    """A scanner writing frames to a :class:`PtyPort`.

    Args:
        port: the pty to write to (plugged by ``start()`` if needed).
        cfg: framing, rate and faults.
        truth_file: optional JSONL file receiving every :class:`Truth` record.
    """

    #: ``pull()`` waits this long after the last write before it trusts "nothing unread", s.
    SETTLE_S = 0.02

    def __init__(
        self, port: PtyPort, cfg: ScannerSimConfig, truth_file: Path | None = None
    ) -> None:
        super().__init__(truth_file)
        self.port = port
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self._n = 0
        self._paused = threading.Event()
        self._coalesced: list[tuple[bytes, Truth]] = []
        self._emitting = threading.Lock()
        self._last_write = 0.0

    # ---- bytes -----------------------------------------------------------------------
    def code(self, n: int) -> tuple[str, str]:
        """The n-th code and its AIM id: waybills of several carriers, unique per scanner."""
        s = self.cfg.scanner_no % 10
        forms = [
            (f"SF{s}{n:012d}", "]C0"),
            (f"YT{s}{n:012d}", "]C0"),
            (f"JT{s}{n:012d}", "]C0"),
            (f"7{3 + s % 4}{n:012d}", "]C0"),
            (f"00{sscc(f'69{s}{n:014d}')}", "]C1"),
        ]
        return forms[n % len(forms)]

    def frame(self, text: str) -> bytes:
        """Wrap ``text`` (AIM id included) in prefix, suffix and framing."""
        body = (self.cfg.prefix + text + self.cfg.suffix).encode()
        if self.cfg.framing == "stx_etx":
            return STX + body + ETX
        return body + TERMINATORS[self.cfg.terminator]

    def next_item(self) -> tuple[bytes, Truth]:
        """Build the next frame (or fault) and its truth record, without writing it."""
        self._n += 1
        n, f = self._n, self.cfg.faults
        roll = self.rng.random
        if roll() < f.get("noread", 0):
            return self.frame(self.cfg.noread), self._truth(n, "noread", None, None)
        code, aim = self.code(n)
        text = (aim if self.cfg.aim else "") + code
        if roll() < f.get("garble", 0):
            cut = self.rng.randrange(1, len(text))
            bad = text[:cut] + "\x07" + text[cut:]
            return self.frame(bad), self._truth(n, "garbled", code, aim)
        return self.frame(text), self._truth(n, "barcode", code, aim if self.cfg.aim else None)

    def _truth(self, n: int, kind: str, value: str | None, aim: str | None) -> Truth:
        return Truth(n, kind, value, aim, delivered=False, t=time.time())

    # ---- writing ---------------------------------------------------------------------
    def emit(self) -> Truth:
        """Write one item, applying the configured faults; returns what was written."""
        with self._emitting:
            return self._emit()

    def _emit(self) -> Truth:
        data, truth = self.next_item()
        f, roll = self.cfg.faults, self.rng.random
        if roll() < f.get("noise", 0):
            self.flush()  # held frames first: one noise burst must stay one run between frames
            self._send(self._noise())
            self.record(Truth(0, "noise", None, None, True, time.time()))
        partial = roll() < f.get("partial", 0)
        if partial:
            self._send_partial(data)
        if not partial and roll() < f.get("coalesce", 0) and len(self._coalesced) < 4:
            self._coalesced.append((data, truth))
            return truth
        batch = [*self._coalesced, (data, truth)]
        self._coalesced = []
        blob = b"".join(d for d, _ in batch)
        ok = self._send(blob, fragment=roll() < f.get("fragment", 0))
        for _, t in batch:
            self.record(Truth(t.n, t.kind, t.value, t.aim, ok, t.t))
        return truth

    def _noise(self) -> bytes:
        size = self.rng.randrange(1, 8)
        if self.cfg.framing == "stx_etx":
            return bytes(self.rng.choice(b"\x00\xff~#\r\n") for _ in range(size))
        return bytes(self.rng.choice(b"\x00\xff") for _ in range(size))

    def _send_partial(self, data: bytes) -> None:
        cut = data[: max(2, len(data) // 2)]
        self._send(cut)
        if self.cfg.framing == "terminator":
            time.sleep(self.cfg.inter_byte_timeout_s * 3)  # silence ends the partial line
        self.record(Truth(0, "partial", None, None, True, time.time()))

    def _send(self, data: bytes, *, fragment: bool = False, timeout: float = 1.0) -> bool:
        chunks = fragments(self.rng, data, fragment)
        if self.cfg.lose_unplugged and self.port.master is None:
            return False
        deadline = time.monotonic() + timeout
        gap = self.cfg.inter_byte_timeout_s / 5
        return write_all(self._write, chunks, deadline, lambda: self.rng.uniform(0.001, gap))

    def _write(self, data: bytes) -> int:
        n = self.port.write(data)
        self._last_write = time.monotonic()
        return n

    # ---- running ---------------------------------------------------------------------
    def pause(self) -> None:
        """Stop emitting between two frames (the port stays plugged) until :meth:`resume`."""
        self._paused.set()

    def resume(self) -> None:
        """Emit again after :meth:`pause`."""
        self._paused.clear()

    def start(self, count: int = 0) -> None:
        """Emit at ``cfg.rate`` per second in a thread; ``count`` items (0: until stop()).
        A stopped simulator can be started again; its truth list goes on."""
        self._stop.clear()
        if self.port.master is None:
            self.port.plug()
        self._thread = threading.Thread(target=self._loop, args=(count,), daemon=True)
        self._thread.start()

    def _loop(self, count: int) -> None:
        period = 1.0 / self.cfg.rate if self.cfg.rate > 0 else 0.0
        next_t = time.monotonic()
        done = 0
        while not self._stop.is_set() and (count == 0 or done < count):
            if self._paused.is_set():
                time.sleep(0.01)
                next_t = time.monotonic()
                continue
            self.emit()
            done += 1
            next_t += period
            delay = next_t - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
        self.flush()

    def flush(self) -> None:
        """Write any frames held back for coalescing."""
        if self._coalesced:
            batch, self._coalesced = self._coalesced, []
            ok = self._send(b"".join(d for d, _ in batch))
            for _, t in batch:
                self.record(Truth(t.n, t.kind, t.value, t.aim, ok, t.t))

    def unplug(self, seconds: float) -> None:
        """Pull the cable for ``seconds`` (nothing is emitted), then replug under a new pty.

        The cable is pulled once the host has read what was already written (up to 1 s), as
        :meth:`pull` does: under load a frame written just before could otherwise be lost
        unseen in the pty, and a test would count it as a reading the agent dropped.
        """
        self._paused.set()
        with self._emitting:
            self._drained(1.0)
            self.port.unplug()
        time.sleep(seconds)
        self.port.plug()
        self._paused.clear()

    def _drained(self, drain_s: float) -> bool:
        """Wait until written bytes have landed and the host read them; False after ``drain_s``."""
        deadline = time.monotonic() + drain_s
        # a pty moves written bytes to the reader's queue asynchronously (a kernel work
        # item): FIONREAD can say 0 just after a write, so give them time to land first
        while time.monotonic() - self._last_write < self.SETTLE_S or self.port.pending():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.001)
        return True

    def pull(self, drain_s: float = 1.0) -> float:
        """Pull the cable between two frames, once the host has read what was sent; emitting
        goes on (see ``lose_unplugged``). Returns the wall time of the pull.

        Raises:
            TimeoutError: the host left bytes unread for ``drain_s`` (they would be lost).
        """
        with self._emitting:
            if not self._drained(drain_s):
                msg = f"{self.port.pending()} bytes unread for {drain_s} s on {self.port.path}"
                raise TimeoutError(msg)
            self.port.unplug()
            return time.time()

    def replug(self) -> float:
        """Plug back in under a new pty (after ``pull()``); returns the wall time."""
        with self._emitting:
            self.port.plug()
            return time.time()


class DemoScanner(DemoDevice[ScannerSim]):
    """A :class:`ScannerSim` on a pty behind the configured port path (``for_demo``)."""

    def __init__(self, device_id: str, sim: ScannerSim) -> None:
        super().__init__(sim)
        self.device_id = device_id

    def expected(self) -> int:
        """Barcodes and no-reads written (faults are not readings)."""
        return sum(t.kind in ("barcode", "noread") and t.delivered for t in self.sim.truth)

    def describe(self) -> str:
        """Where the simulated scanner is."""
        return f"scanner on {self.sim.port.path} (symlink {self.sim.port.link})"


#: Faults the demo injects, so its output shows rejects being counted.
DEMO_FAULTS = {"noread": 0.03, "noise": 0.02, "garble": 0.01, "fragment": 0.2, "coalesce": 0.05}


def for_demo(device_id: str, cfg: SerialLineScannerConfig, rate: float, seed: int) -> DemoScanner:
    """A simulated scanner matching ``cfg``, plugged in at ``cfg.port`` (a symlink path)."""
    port = demo_port(cfg.port)
    sim_cfg = ScannerSimConfig(
        framing=cfg.framing,
        terminator=cfg.terminator,
        aim=cfg.aim_ids,
        rate=rate,
        seed=seed,
        scanner_no=seed,
        faults=DEMO_FAULTS,
        noread=(cfg.noread or ["NoRead"])[0],
        prefix=cfg.prefix,
        suffix=cfg.suffix,
    )
    return DemoScanner(device_id, ScannerSim(port, sim_cfg))


def sscc(data17: str) -> str:
    """17 digits + GS1 mod-10 check digit (weights 3,1,3,... from the right)."""
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(data17)))
    return data17 + str((10 - total % 10) % 10)


def main(argv: list[str] | None = None) -> int:
    """Run a simulated scanner on a new pty until interrupted."""
    p = argparse.ArgumentParser(prog="python -m simulators.serial_line_scanner")
    p.add_argument("--link", type=Path, help="stable symlink to the pty (like /dev/serial/by-id)")
    p.add_argument("--rate", type=float, default=5.0, help="readings per second")
    p.add_argument("--count", type=int, default=0, help="stop after N readings (0: never)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--scanner-no", type=int, default=1, help="digit making codes unique")
    p.add_argument("--framing", choices=["terminator", "stx_etx"], default="terminator")
    p.add_argument("--terminator", choices=sorted(TERMINATORS), default="CRLF")
    p.add_argument("--no-aim", action="store_true", help="do not send AIM ids")
    p.add_argument("--faults", default="", help="e.g. noise=0.05,garble=0.02,fragment=0.3")
    p.add_argument("--truth", type=Path, help="append every emitted item to this JSONL file")
    args = p.parse_args(argv)
    cfg = ScannerSimConfig(
        framing=args.framing,
        terminator=args.terminator,
        aim=not args.no_aim,
        rate=args.rate,
        seed=args.seed,
        scanner_no=args.scanner_no,
        faults=parse_faults(args.faults),
    )
    port = PtyPort(args.link)
    print(port.plug(), flush=True)
    if args.link:
        print(f"symlink {args.link} -> {port.path}", file=sys.stderr, flush=True)
    announce(port.url)
    sim = ScannerSim(port, cfg, args.truth)
    sim.start(args.count)
    return serve(sim.wait, sim.stop, port.close)


if __name__ == "__main__":
    sys.exit(main())
