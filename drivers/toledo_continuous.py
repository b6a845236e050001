"""Toledo continuous output: the indicator broadcasts fixed-length frames; no polling.

Wire format (docs/protocols.md §3.2; Mettler WILDCAT technical manual p.6-4/6-5, Rockwell 57C428
Appendix D, Fairbanks FB3000 p.55, Cardinal 225 p.118)::

    STX  SWA SWB SWC  W W W W W W  [T T T T T T]  CR  [CHK]       18 bytes (17 / 12 / 11)
    02   2D  30  20   30 30 31 32 33 34  30 30 30 30 30 30  0D  2A   = stable 1.234 kg gross

* SWA bits 0-2: decimal position (0 ``XXXX00`` ... 2 ``XXXXXX`` ... 5 ``XXX.XXX`` ... 7).
* SWB bit 0 net, 1 negative, 2 over capacity (-> ``over_capacity`` reject), 3 motion, 4 kg (else
  lb), 6 power-up not zeroed (-> ``not_zeroed`` reject). Bit 5 is not relied on (WILDCAT says 1,
  Fairbanks 0). SWC bit 0: grams.
* Weight and tare: 6 ASCII digits, no sign, no point. ``CHK``: two's complement of the 7-bit sum
  of every byte before it, STX and CR included (``check = "checksum"``; ``checksum = false`` for
  17-byte indicators). ``tare_field = false``: the short variant without tare [U, Cardinal].
* Bit 7 is parity (7E1 typical). A 7E1 character and an 8N1 character are both 10 bits, so the
  port is read 8N1 by default and every byte is masked to 7 bits (§3.2: "With 8N1, mask with
  0x7F"); ``bytesize = 7, parity = "E"`` also works. The checksum catches what parity would.

Frames are cut by length, not by delimiters, because the checksum byte may equal STX or CR: an
STX before the CR position, or anything but CR at it, ends the frame as ``partial``.

Publishing on settle, as in ``drivers/mtsics_scale.py``: motion frames are counted in
``motion``, stable weights under ``min_weight_g`` in ``below_min``, repeats of the last
returned weight in ``repeats`` (at 5-20 Hz most frames are repeats); only the first stable
frame of a new weight is returned. An indicator that stops streaming for ``stall_timeout_ms``
raises DeviceIOError (cable pulled or indicator hung: the supervisor reopens it).

Port strings: :mod:`drivers.common.link` (``/dev/serial/by-id/...``, ``socket://host:port``,
``loop://``). Serial settings are [U]: 4800 Bd or faster per WILDCAT; check the indicator.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from decimal import Decimal
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from drivers.common.framing import KEEP, Event, Framer, Reject
from drivers.common.link import LinkConfig
from drivers.common.settle import Settling
from drivers.common.stream import StreamDriver
from drivers.reasons import FRAMING, R
from edge_agent.errors import FrameError
from edge_agent.reading import Decoded, Kind

STX, CR = 0x02, 0x0D
GRAMS = {"g": Decimal(1), "kg": Decimal(1000), "lb": Decimal("453.59237")}
#: Strip the parity bit (7E1 data read on an 8N1 port).
MASK7 = bytes(b & 0x7F for b in range(256))


class ToledoContinuousConfig(LinkConfig):
    """``type = "toledo_continuous"``."""

    type: Literal["toledo_continuous"]
    checksum: bool = True
    tare_field: bool = True
    max_capacity_g: float = Field(gt=0, allow_inf_nan=False)
    min_weight_g: float = Field(default=20.0, ge=0, allow_inf_nan=False)
    inter_byte_timeout_ms: int = Field(default=100, ge=1, le=10_000)
    stall_timeout_ms: int = Field(default=2000, ge=0, le=600_000)

    @model_validator(mode="after")
    def _range(self) -> ToledoContinuousConfig:
        if self.min_weight_g >= self.max_capacity_g:
            msg = "min_weight_g must be below max_capacity_g"
            raise ValueError(msg)
        return self

    @property
    def frame_length(self) -> int:
        """Bytes per frame: STX, 3 status words, 6 weight, [6 tare], CR, [checksum]."""
        return 11 + 6 * self.tare_field + self.checksum


def checksum(data: bytes) -> int:
    """Two's complement of the 7-bit sum of ``data``."""
    return -sum(data) & 0x7F


class ToledoFramer(Framer):
    """Fixed-length ``STX ... CR [CHK]`` frames (7-bit bytes)."""

    def __init__(self, cfg: ToledoContinuousConfig) -> None:
        super().__init__(cfg.frame_length, cfg.inter_byte_timeout_ms / 1000)
        self.cr_at = 10 + 6 * cfg.tare_field

    def feed(self, data: bytes, now: float) -> list[Event]:
        """As :meth:`Framer.feed`, every byte masked to 7 bits first (7E1 read as 8N1)."""
        return super().feed(data.translate(MASK7), now)

    def _start(self, b: int, out: list[Event]) -> None:
        if b == STX:
            self._flush_noise(out)
            self._in_frame = True
            self._buf.append(b)
        else:
            self._noise.append(b)

    def _byte(self, b: int, out: list[Event]) -> None:
        if not self._in_frame:
            self._start(b, out)
            return
        pos = len(self._buf)
        if (pos < self.cr_at and b == STX) or (pos == self.cr_at and b != CR):
            out.append(Reject(R.PARTIAL, bytes(self._buf[:KEEP])))
            self._reset()
            self._start(b, out)
            return
        self._buf.append(b)
        if len(self._buf) == self.max_len:
            out.append(bytes(self._buf))
            self._reset()


def parse_frame(frame: bytes, cfg: ToledoContinuousConfig) -> Decoded:
    """One frame (7-bit bytes) -> a weight, stable or not. Raises FrameError."""
    cr_at = 10 + 6 * cfg.tare_field
    if len(frame) != cfg.frame_length or frame[0] != STX or frame[cr_at] != CR:
        raise FrameError(R.MALFORMED, f"{len(frame)} bytes, expected {cfg.frame_length}")
    if cfg.checksum and frame[-1] != checksum(frame[:-1]):
        raise FrameError(R.CHECKSUM, f"got {frame[-1]:02x}, computed {checksum(frame[:-1]):02x}")
    swa, swb, swc = frame[1:4]
    digits = frame[4:cr_at]
    if not digits.isdigit():
        raise FrameError(R.MALFORMED, "weight or tare not 6 digits")
    if swb & 0x04:
        raise FrameError(R.OVER_CAPACITY, "SWB bit 2")
    if swb & 0x40:
        raise FrameError(R.NOT_ZEROED, "SWB bit 6: power-up, not zeroed")
    unit = "g" if swc & 0x01 else "kg" if swb & 0x10 else "lb"
    value = Decimal(int(digits[:6])).scaleb(2 - (swa & 0x07))
    grams = float((-value if swb & 0x02 else value) * GRAMS[unit])
    if not math.isfinite(grams) or abs(grams) > cfg.max_capacity_g:
        raise FrameError(R.OUT_OF_RANGE, f"{grams} g outside ±{cfg.max_capacity_g} g")
    check = "checksum" if cfg.checksum else "none"
    return Decoded(Kind.WEIGHT, grams, frame, unit=unit, check=check, stable=not swb & 0x08)


class ToledoContinuousDriver(Settling, StreamDriver[ToledoContinuousConfig]):
    """A weight indicator in Toledo continuous-output mode on a serial port.

    Public counters: ``motion``, ``below_min``, ``repeats`` (see the module docstring).
    """

    kind: ClassVar[str] = "toledo_continuous"
    REJECTS: ClassVar[frozenset[R]] = FRAMING | {
        R.MALFORMED,
        R.CHECKSUM,
        R.OVER_CAPACITY,
        R.NOT_ZEROED,
        R.OUT_OF_RANGE,
    }
    Config = ToledoContinuousConfig
    KEEP_INPUT = False  # frames from before the reopen are old weights

    def __init__(self, device_id: str, cfg: ToledoContinuousConfig) -> None:
        super().__init__(device_id, cfg)
        self.motion = self.below_min = self.repeats = 0
        self._last: float | None = None

    def make_framer(self) -> Framer:
        """Fixed-length frames of 7-bit bytes."""
        return ToledoFramer(self.cfg)

    def _on_open(self) -> None:
        self._last = None

    def _idle(self, now: float) -> None:
        stall = self.cfg.stall_timeout_ms / 1000
        if stall and now - self.last_rx > stall:
            raise self._link.lost("no data for", round(now - self.last_rx, 1), "s")

    def _watch_due(self, now: float) -> float:
        stall = self.cfg.stall_timeout_ms / 1000
        return self.last_rx + stall - now if stall else math.inf

    def decode(self, frame: bytes) -> list[Decoded]:
        """The weight of one frame, stable or not. Raises FrameError."""
        return [parse_frame(frame, self.cfg)]

    def _admit(self, frame: bytes, readings: Sequence[Decoded]) -> list[Decoded]:
        """Publish on settle (module docstring): motion, small weights and repeats are counted."""
        del frame
        return [d for d in readings if self._settled(d, self.cfg.min_weight_g)]
