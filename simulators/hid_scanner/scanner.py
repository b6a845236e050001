"""The person with the scanner: codes -> reports (with faults) -> a device, and a truth log.

A :class:`HidScannerSim` writes to a *sink*: a :class:`~simulators.hid_scanner.backend.SimDevice`
in the same process, or a :class:`~simulators.hid_scanner.spool.SpoolDevice` feeding a daemon.
Codes are courier waybills (docs/protocols.md §5: SF, YTO, J&T, GS1 SSCC as ``]C1``) and two long
2-D codes (GS1 DataMatrix ``]d2`` with GS separators, a QR URL) that need 2-3 HID POS packets.

Fault modes, each a probability per code, seedable (docs/protocols.md §6, Handheld HID rows)::

    keyboard  drop_release   one release report lost (the code must still decode)
              rollover       one press replaced by ErrorRollOver 01x6  -> reject "rollover"
              unknown_key    an F1 (0x3A) press inside the code        -> reject "unknown_key"
              partial        the terminator never comes, then silence  -> reject "partial"
    pos       missing_packet the last packet never comes, then silence -> "missing_continuation"
              bad_length     a packet's length byte is wrong           -> reject "bad_length"

Every code is recorded in :attr:`HidScannerSim.truth` (and optionally a JSONL file).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

from simulators.emitter import Emitter
from simulators.hid_scanner.reports import (
    ENTER,
    ROLLOVER,
    TAB,
    keyboard_reports,
    pos_reports,
    press,
)
from simulators.serial_line_scanner import sscc

FAULTS = {
    "keyboard": ("drop_release", "rollover", "unknown_key", "partial"),
    "pos": ("missing_packet", "bad_length"),
}
REASONS = {"rollover": "rollover", "unknown_key": "unknown_key", "partial": "partial",
           "missing_packet": "missing_continuation", "bad_length": "bad_length"}  # fmt: skip


class Sink(Protocol):
    """Where reports go: an in-process SimDevice or a SpoolDevice."""

    plugged: bool

    def send(self, reports: Sequence[bytes]) -> bool: ...


@dataclass(frozen=True)
class Truth:
    """One scan: a barcode the agent must publish, or a code it must reject with ``reason``."""

    n: int
    kind: str  # barcode | reject
    value: str
    aim: str | None
    reason: str | None
    delivered: bool
    t: float


@dataclass
class HidSimConfig:
    """How the simulated scanner types and which faults it injects."""

    mode: str = "keyboard"
    aim: bool = True  # keyboard: type the ]cm AIM id first (pos always carries it)
    gs: str = "ctrl"  # keyboard: GS as "ctrl" (Ctrl+]) or "alt_numpad" (Alt + 0 2 9)
    terminator: str = "enter"
    rate: float = 5.0
    seed: int = 1
    scanner_no: int = 1
    gap_s: float = 0.4  # silence after a cut code: longer than the driver's timeouts
    faults: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.faults) - set(FAULTS.get(self.mode, ()))
        if unknown or self.gs not in ("ctrl", "alt_numpad"):
            msg = f"mode {self.mode!r}: unknown faults {sorted(unknown)} or gs {self.gs!r}"
            raise ValueError(msg)


def code(n: int, scanner_no: int = 1) -> tuple[str, str]:
    """The n-th code of a scanner and its AIM id; unique per (scanner_no, n)."""
    s = scanner_no % 10
    gtin = sscc(f"690123456{n % 10000:04d}")
    forms = [
        (f"SF{s}{n:012d}", "]C0"),
        (f"YT{s}{n:012d}", "]C0"),
        (f"JT{s}{n:012d}", "]C0"),
        (f"00{sscc(f'69{s}{n:014d}')}", "]C1"),
        (f"01{gtin}21SN{s}{n:010d}\x1d10LOT{n % 997:03d}\x1d91{'EDGE-AGENT' * 3}", "]d2"),
        (f"https://t.example.cn/w/{s}{n:012d}?k={'0123456789abcdef' * 4}&v=2", "]Q1"),
    ]
    return forms[n % len(forms)]


class HidScannerSim(Emitter[Truth]):
    """Scans codes into ``sink`` at ``cfg.rate`` per second (or one by one with :meth:`emit`).

    Args:
        sink: the simulated device to send reports through.
        cfg: typing options, rate and faults.
        truth_file: optional JSONL file receiving every :class:`Truth` record.
    """

    def __init__(self, sink: Sink, cfg: HidSimConfig, truth_file: Path | None = None) -> None:
        super().__init__(truth_file)
        self.sink = sink
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.n = 0

    def reports(self, text: str, aim: str) -> list[bytes]:
        """The clean reports for one code (no fault)."""
        if self.cfg.mode == "pos":
            return pos_reports(text.encode(), aim)
        typed = (aim if self.cfg.aim else "") + text
        term = ENTER if self.cfg.terminator == "enter" else TAB
        return keyboard_reports(typed, terminator=term, gs=self.cfg.gs)

    def next_item(self) -> tuple[list[bytes], Truth]:
        """Build the next code's reports, a fault applied or not, and its truth record."""
        self.n += 1
        text, aim = code(self.n, self.cfg.scanner_no)
        reports = self.reports(text, aim)
        fault = next((f for f in FAULTS[self.cfg.mode] if self._roll(f)), None)
        if fault is not None:
            reports = getattr(self, f"_{fault}")(reports)
        reason = REASONS.get(fault or "")
        shown_aim = aim if self.cfg.aim or self.cfg.mode == "pos" else None
        kind = "reject" if reason else "barcode"
        return reports, Truth(self.n, kind, text, shown_aim, reason, False, time.time())

    def _roll(self, fault: str) -> bool:
        return self.rng.random() < self.cfg.faults.get(fault, 0.0)

    # ---- faults (reports in, reports out) ----------------------------------------------
    def _drop_release(self, reports: list[bytes]) -> list[bytes]:
        releases = [i for i, r in enumerate(reports[:-2]) if not any(r) and i > 0]
        # prefer the release between two equal presses: the hard case for a decoder
        twins = [i for i in releases if i + 1 < len(reports) and reports[i - 1] == reports[i + 1]]
        drop = self.rng.choice(twins or releases)
        return reports[:drop] + reports[drop + 1 :]

    def _rollover(self, reports: list[bytes]) -> list[bytes]:
        presses = [i for i, r in enumerate(reports[:-2]) if any(r[2:])]
        i = self.rng.choice(presses)
        return [*reports[:i], ROLLOVER, *reports[i + 1 :]]

    def _unknown_key(self, reports: list[bytes]) -> list[bytes]:
        i = self.rng.randrange(0, len(reports) - 2, 2)
        return [*reports[:i], press(0, 0x3A), bytes(8), *reports[i:]]

    def _partial(self, reports: list[bytes]) -> list[bytes]:
        return reports[:-2]

    def _missing_packet(self, reports: list[bytes]) -> list[bytes]:
        if len(reports) > 1:
            return reports[:-1]
        return [reports[0][:63] + b"\x01"]

    def _bad_length(self, reports: list[bytes]) -> list[bytes]:
        i = self.rng.randrange(len(reports))
        packet = bytearray(reports[i])
        n = packet[1]
        if n == 56 or (n < 56 and self.rng.random() < 0.5):
            packet[1] = min(255, n + self.rng.randint(1, 7))  # runs into the padding / > 56
        else:
            packet[1] = n - 1  # the last data byte is left in the padding
        return [*reports[:i], bytes(packet), *reports[i + 1 :]]

    # ---- sending -----------------------------------------------------------------------
    def emit(self) -> Truth:
        """Scan one code: send its reports, record the truth, keep silent after a cut code."""
        reports, truth = self.next_item()
        ok = self.sink.send(reports)
        truth = Truth(**{**asdict(truth), "delivered": ok})
        self.record(truth)
        if truth.reason in ("partial", "missing_continuation"):
            time.sleep(self.cfg.gap_s)
        return truth

    def start(self, count: int = 0) -> None:
        """Scan at ``cfg.rate`` per second in a thread; ``count`` codes (0: until stop())."""
        self._thread = threading.Thread(target=self._loop, args=(count,), daemon=True)
        self._thread.start()

    def _loop(self, count: int) -> None:
        period = 1.0 / self.cfg.rate if self.cfg.rate > 0 else 0.0
        next_t, done = time.monotonic(), 0
        while not self._stop.is_set() and (count == 0 or done < count):
            self.emit()
            done += 1
            next_t = max(next_t + period, time.monotonic())
            self._stop.wait(next_t - time.monotonic())
