"""SMA scale protocol (SMA SCP-0499, levels 1 and 2), polled or continuous.

Wire format (docs/protocols.md §3.3; SMA standard transcript, Sartorius PR 5220 p.130, Fairbanks
PR 5410 p.120, Cardinal 190, BTEK T419S p.61, Minebea PR 5310 p.145)::

    host -> scale   LF W CR              (poll_command W / H / Q; continuous: R or S once)
    scale -> host   LF s r n m f wwwwwwwwww uuu CR          20 bytes
                    0A 20 31 47 20 20 "     1.234" "kg " 0D   = stable 1.234 kg gross
                    LF ? CR                                   unknown command -> reject

* ``s`` status: ``Z`` centre of zero, space = none (a weight); ``O`` over capacity, ``U`` under
  zero, ``E`` zero error, ``T`` tare error, ``e`` not displayed -> counted rejects.
* ``r`` range digit; ``n`` mode ``G``/``N`` gross/net, ``g``/``n`` high resolution (``T``, a tare
  display, is rejected as ``not_weight``); ``m`` ``M`` = motion; ``f`` reserved.
* weight: 10 characters, right-aligned, dashes on errors (``no_weight``); unit: 3 characters
  (``lb ``, ``kg ``, ``g  ``, ``oz ``). No checksum: only non-ASCII bytes and format errors are
  detectable.

``mode = "poll"`` sends ``poll_command`` every ``poll_interval_ms`` before a read (``_tick``), one
outstanding at a time; no reply in ``reply_timeout_ms`` is a ``no_reply`` reject, ``max_missed``
in a row raise DeviceIOError. ``mode = "continuous"`` writes ``continuous_command`` on open
(``""``: the scale streams by itself [U]) and raises DeviceIOError after ``stall_timeout_ms``
of silence. Publishing on settle (motion, ``below_min``, ``repeats``) is as documented in
``drivers/mtsics_scale.py``. Port strings: :mod:`drivers.common.link`; 8N1 9600 Bd is common [U].
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from decimal import Decimal
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from drivers.common.framing import Event, Framer, Reject, StxEtxFramer
from drivers.common.link import LinkConfig
from drivers.common.poll import Polling
from drivers.common.settle import Settling
from drivers.common.stream import StreamDriver
from drivers.reasons import FRAMING, R
from edge_agent.errors import FrameError
from edge_agent.reading import Decoded, Kind

LF, CR = 0x0A, 0x0D
GRAMS = {"g": Decimal(1), "kg": Decimal(1000), "lb": Decimal("453.59237"),
         "oz": Decimal("28.349523125"), "t": Decimal(10**6)}  # fmt: skip
STATUS = {"O": R.OVER_CAPACITY, "U": R.UNDER_RANGE, "E": R.ZERO_ERROR, "T": R.TARE_ERROR,
          "e": R.NOT_DISPLAYED}  # fmt: skip
NUMBER = re.compile(r"-?\d+(\.\d+)?")


class SmaScaleConfig(LinkConfig):
    """``type = "sma_scale"``."""

    type: Literal["sma_scale"]
    max_capacity_g: float = Field(gt=0, allow_inf_nan=False)
    min_weight_g: float = Field(default=20.0, ge=0, allow_inf_nan=False)
    mode: Literal["poll", "continuous"] = "poll"
    poll_command: Literal["W", "H", "Q"] = "W"
    continuous_command: Literal["R", "S", ""] = "R"
    poll_interval_ms: int = Field(default=200, ge=20, le=60_000)
    reply_timeout_ms: int = Field(default=1000, ge=50, le=60_000)
    max_missed: int = Field(default=5, ge=1, le=1000)
    stall_timeout_ms: int = Field(default=2000, ge=0, le=600_000)
    inter_byte_timeout_ms: int = Field(default=100, ge=1, le=10_000)

    @model_validator(mode="after")
    def _range(self) -> SmaScaleConfig:
        if self.min_weight_g >= self.max_capacity_g:
            msg = "min_weight_g must be below max_capacity_g"
            raise ValueError(msg)
        return self


class LfCrFramer(StxEtxFramer):
    """``LF payload CR``; the emitted frame includes LF and CR."""

    START, END = LF, CR


def parse_frame(frame: bytes, cfg: SmaScaleConfig) -> Decoded:
    """One ``LF ... CR`` frame -> a weight, stable or not. Raises FrameError."""
    if frame == b"\n?\r":
        raise FrameError(R.UNKNOWN_COMMAND, "the scale answered ?")
    if any(b < 0x20 or b > 0x7E for b in frame[1:-1]):
        raise FrameError(R.GARBLED, "non-ASCII or control byte")
    if len(frame) != 20 or frame[0] != LF or frame[-1] != CR:
        raise FrameError(R.MALFORMED, f"{len(frame)} bytes, expected 20")
    text = frame[1:-1].decode("ascii")
    s, r, n, m, weight, unit = text[0], text[1], text[2], text[3], text[5:15], text[15:].strip()
    if s in STATUS:
        raise FrameError(STATUS[s], f"status {s!r}")
    if n == "T":
        raise FrameError(R.NOT_WEIGHT, "tare weight display")
    if s not in " Z" or not r.isdigit() or n not in "GNgn" or m not in " M":
        raise FrameError(R.MALFORMED, f"status fields {text[:5]!r}")
    if set(weight.strip()) == {"-"}:
        raise FrameError(R.NO_WEIGHT, "dashes")
    if not NUMBER.fullmatch(weight.strip()):
        raise FrameError(R.MALFORMED, f"weight {weight!r}")
    if unit not in GRAMS:
        raise FrameError(R.UNIT, f"unknown unit {unit!r}")
    grams = float(Decimal(weight.strip()) * GRAMS[unit])
    if not math.isfinite(grams) or abs(grams) > cfg.max_capacity_g:
        raise FrameError(R.OUT_OF_RANGE, f"{grams} g outside ±{cfg.max_capacity_g} g")
    return Decoded(Kind.WEIGHT, grams, frame, unit=unit, check="none", stable=m == " ")


class SmaScaleDriver(Settling, Polling, StreamDriver[SmaScaleConfig]):
    """A scale speaking the SMA protocol on a serial port.

    Public counters: ``motion``, ``below_min``, ``repeats``, ``polls``.
    """

    kind: ClassVar[str] = "sma_scale"
    REJECTS: ClassVar[frozenset[R]] = FRAMING | {
        R.GARBLED,
        R.MALFORMED,
        R.UNIT,
        R.OUT_OF_RANGE,
        R.NO_REPLY,
        R.UNKNOWN_COMMAND,
        R.NOT_WEIGHT,
        R.NO_WEIGHT,
        *STATUS.values(),
    }
    Config = SmaScaleConfig
    KEEP_INPUT = False  # replies to polls sent before the reopen are stale

    def __init__(self, device_id: str, cfg: SmaScaleConfig) -> None:
        super().__init__(device_id, cfg)
        self.motion = self.below_min = self.repeats = self.polls = 0
        self._last: float | None = None
        self._reset_poll()

    def make_framer(self) -> Framer:
        """``LF ... CR`` frames of at most 32 bytes."""
        return LfCrFramer(32, self.cfg.inter_byte_timeout_ms / 1000)

    def _on_open(self) -> None:
        """Start the stream (continuous mode); forget the last weight and the poll."""
        cfg = self.cfg
        if cfg.mode == "continuous" and cfg.continuous_command:
            self.write(b"\n" + cfg.continuous_command.encode() + b"\r")
        self._last = None
        self._reset_poll()

    def _tick(self, now: float) -> None:
        if self.cfg.mode == "poll":
            cmd = b"\n" + self.cfg.poll_command.encode() + b"\r"
            self._poll_due(now, self.cfg, cmd, cmd)

    def _due(self, now: float) -> float:
        return self._poll_wait(now, self.cfg) if self.cfg.mode == "poll" else math.inf

    def _stall_s(self) -> float:
        return self.cfg.stall_timeout_ms / 1000 if self.cfg.mode == "continuous" else 0

    def _idle(self, now: float) -> None:
        stall = self._stall_s()
        if stall and now - self.last_rx > stall:
            raise self._lost("no data for", round(now - self.last_rx, 1), "s")

    def _watch_due(self, now: float) -> float:
        stall = self._stall_s()
        return self.last_rx + stall - now if stall else math.inf

    def _read_events(self, timeout: float) -> Sequence[Event | Decoded]:
        events = super()._read_events(timeout)
        if any(not isinstance(ev, Reject) or ev.reason != R.NOISE for ev in events):
            self._sent_at, self._missed = None, 0  # a reply, even a cut-off one, answers the poll
        return events

    def decode(self, frame: bytes) -> list[Decoded]:
        """The weight of one frame, stable or not. Raises FrameError."""
        return [parse_frame(frame, self.cfg)]

    def _admit(self, frame: bytes, readings: Sequence[Decoded]) -> list[Decoded]:
        """Publish on settle (module docstring): motion, small weights and repeats are counted."""
        del frame
        return [d for d in readings if self._settled(d, self.cfg.min_weight_g)]
