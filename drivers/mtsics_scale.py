"""Mettler Toledo MT-SICS scale, polled: the driver sends ``S`` or ``SI`` and parses the reply.

Wire format (docs/protocols.md §3.1; InstrumentKit ``mt_sics.py``; Mettler operating instructions)::

    host -> scale   SI CR LF                       (or S: wait for a stable weight)
    scale -> host   S S      1.234 kg CR LF        stable        -> a reading (grams, unit "kg")
                    S D      1.229 kg CR LF        dynamic       -> counted in ``motion``
                    S I | S + | S - CR LF          not executable / overload / underload -> reject
                    ES | ET | EL CR LF             syntax / transmission / logical error -> reject
    host -> scale   Z CR LF  -> Z A | Z I | Z + | Z -          (:meth:`MtSicsScaleDriver.zero`)
                    T CR LF  -> T S   0.500 kg | T I | T + | T -   (:meth:`MtSicsScaleDriver.tare`)

Replies are split on whitespace (the 10-character right-aligned weight field is [U]). MT-SICS has
no checksum: only non-ASCII bytes and format errors are detectable (``check = "none"``).

Publishing on settle (all scale drivers): a stable weight is returned once, when the scale has
settled on it. Unstable (``S D``) replies are never returned: they are counted in ``motion`` and
re-arm the driver; stable weights under ``min_weight_g`` (empty platform, zero drift, negative
net) are counted in ``below_min`` and re-arm it; a stable weight equal to the last one returned
is counted in ``repeats``. Weights above ``max_capacity_g``, NaN or infinite are rejected as
``out_of_range``.

Polling happens before each read (``_tick``): when no poll is outstanding and ``poll_interval_ms``
has passed, the poll is written; a reply (or a cut-off line) answers it. No reply within
``reply_timeout_ms`` is a ``no_reply`` reject; ``max_missed`` in a row raise DeviceIOError, so
the supervisor reopens the port and the stall shows in the device state.

Port strings: :mod:`drivers.common.link` (``/dev/serial/by-id/...``, ``socket://host:1701``,
``loop://``). Serial 9600 8N1 is typical [S: InstrumentKit]; all configurable.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Sequence
from decimal import Decimal
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from drivers.common.framing import Event, Framer, Reject, TerminatorFramer
from drivers.common.link import LinkConfig
from drivers.common.poll import Polling
from drivers.common.settle import Settling
from drivers.common.stream import StreamDriver
from drivers.reasons import FRAMING, R
from edge_agent.errors import FrameError
from edge_agent.reading import Decoded, Kind

#: Grams per MT-SICS unit text (exact).
GRAMS = {"g": Decimal(1), "kg": Decimal(1000), "mg": Decimal("0.001"), "t": Decimal(10**6),
         "lb": Decimal("453.59237"), "oz": Decimal("28.349523125")}  # fmt: skip
#: Reply status / error id -> reject reason.
REJECT = {"I": R.NOT_EXECUTABLE, "+": R.OVER_CAPACITY, "-": R.UNDER_RANGE,
          "ES": R.SYNTAX_ERROR, "ET": R.TRANSMISSION_ERROR, "EL": R.LOGICAL_ERROR}  # fmt: skip
NUMBER = re.compile(r"-?\d+(\.\d+)?")


class SicsFramer(TerminatorFramer):
    """CR LF lines, at most 64 bytes."""

    def __init__(self, timeout: float) -> None:
        super().__init__(b"\r\n", 64, timeout)


class MtSicsScaleConfig(LinkConfig):
    """``type = "mtsics_scale"``."""

    type: Literal["mtsics_scale"]
    max_capacity_g: float = Field(gt=0, allow_inf_nan=False)
    min_weight_g: float = Field(default=20.0, ge=0, allow_inf_nan=False)
    poll_command: Literal["SI", "S"] = "SI"
    poll_interval_ms: int = Field(default=200, ge=20, le=60_000)
    reply_timeout_ms: int = Field(default=1000, ge=50, le=60_000)
    max_missed: int = Field(default=5, ge=1, le=1000)
    inter_byte_timeout_ms: int = Field(default=100, ge=1, le=10_000)

    @model_validator(mode="after")
    def _range(self) -> MtSicsScaleConfig:
        if self.min_weight_g >= self.max_capacity_g:
            msg = "min_weight_g must be below max_capacity_g"
            raise ValueError(msg)
        return self


def to_grams(text: str, unit: str, cfg: MtSicsScaleConfig) -> float:
    """``text`` in ``unit`` as grams, range-checked. Raises FrameError."""
    if not NUMBER.fullmatch(text):
        raise FrameError(R.MALFORMED, f"weight {text!r}")
    if unit not in GRAMS:
        raise FrameError(R.UNIT, f"unknown unit {unit!r}")
    grams = float(Decimal(text) * GRAMS[unit])
    if not math.isfinite(grams) or abs(grams) > cfg.max_capacity_g:
        raise FrameError(R.OUT_OF_RANGE, f"{grams} g outside ±{cfg.max_capacity_g} g")
    return grams


def parse_frame(frame: bytes, cfg: MtSicsScaleConfig) -> Decoded:
    """One reply line (CR LF included) -> a weight, stable or not. Raises FrameError."""
    if not frame.endswith(b"\r\n"):
        raise FrameError(R.MALFORMED, "no CR LF")
    if any(b > 0x7E or (b < 0x20 and b not in (0x0D, 0x0A)) for b in frame):
        raise FrameError(R.GARBLED, "non-ASCII or control byte")
    tokens = frame.decode("ascii").split()
    if not tokens:
        raise FrameError(R.MALFORMED, "empty line")
    if tokens[0] in REJECT:
        raise FrameError(REJECT[tokens[0]], tokens[0])
    if tokens[0] != "S":
        raise FrameError(R.UNEXPECTED, f"reply {tokens[0]!r}")
    status = tokens[1] if len(tokens) > 1 else ""
    if status in REJECT:
        raise FrameError(REJECT[status], f"S {status}")
    if status not in ("S", "D") or len(tokens) != 4:
        raise FrameError(R.MALFORMED, f"{len(tokens)} fields, status {status!r}")
    grams = to_grams(tokens[2], tokens[3], cfg)
    return Decoded(Kind.WEIGHT, grams, frame, unit=tokens[3], check="none", stable=status == "S")


class MtSicsScaleDriver(Settling, Polling, StreamDriver[MtSicsScaleConfig]):
    """An MT-SICS balance or weighing terminal on a serial port (or serial-over-TCP).

    Public counters: ``motion``, ``below_min``, ``repeats`` (see the module docstring),
    ``polls`` (polls written). Rejects are in ``rejects`` as for every driver.
    """

    kind: ClassVar[str] = "mtsics_scale"
    REJECTS: ClassVar[frozenset[R]] = FRAMING | {
        R.GARBLED,
        R.MALFORMED,
        R.UNIT,
        R.OUT_OF_RANGE,
        R.UNEXPECTED,
        R.NO_REPLY,
        *REJECT.values(),
    }
    Config = MtSicsScaleConfig
    KEEP_INPUT = False  # replies to polls sent before the reopen are stale
    #: Reply ids that answer zero/tare commands, not polls.
    REPLY_IDS = frozenset({b"Z", b"ZI", b"T", b"TI", b"TA", b"TAC"})
    ACTIONS = frozenset({"zero", "tare"})

    def __init__(self, device_id: str, cfg: MtSicsScaleConfig) -> None:
        super().__init__(device_id, cfg)
        self.motion = self.below_min = self.repeats = self.polls = 0
        self._on_open()

    def make_framer(self) -> Framer:
        """CR LF lines, at most 64 bytes."""
        return SicsFramer(self.cfg.inter_byte_timeout_ms / 1000)

    def _on_open(self) -> None:
        self._last: float | None = None
        self._reset_poll()
        self._replies: dict[str, str] = {}

    def _tick(self, now: float) -> None:
        cmd = self.cfg.poll_command.encode()
        self._poll_due(now, self.cfg, cmd + b"\r\n", cmd)

    def _due(self, now: float) -> float:
        return self._poll_wait(now, self.cfg)

    def _read_events(self, timeout: float) -> Sequence[Event | Decoded]:
        events = super()._read_events(timeout)
        if any(isinstance(ev, Reject) and ev.reason != R.NOISE for ev in events):
            self._sent_at, self._missed = None, 0  # a cut-off reply is still a reply
        return events

    def decode(self, frame: bytes) -> list[Decoded]:
        """A weight reply's weight; a zero/tare reply is kept for the command. Raises FrameError."""
        head = frame.split(maxsplit=1)[0] if frame.strip() else b""
        if head in self.REPLY_IDS:
            self._replies[head.decode()] = frame.decode("ascii", "replace").strip()
            return []
        self._sent_at, self._missed = None, 0
        return [parse_frame(frame, self.cfg)]

    def _admit(self, frame: bytes, readings: Sequence[Decoded]) -> list[Decoded]:
        """Publish on settle (module docstring): motion, small weights and repeats are counted."""
        del frame
        return [d for d in readings if self._settled(d, self.cfg.min_weight_g)]

    def zero(self, timeout: float = 5.0) -> str:
        """Zero the scale (``Z``). Call from the reading thread (``DeviceWorker.call``).

        Returns:
            The reply status: "A" done, "I" not executable (moving), "+"/"-" outside the zero
            range. Weights read meanwhile are kept for ``read()``.

        Raises:
            DeviceIOError: the link broke, or no ``Z`` reply within ``timeout`` s.
        """
        return self._command("Z", timeout)

    def tare(self, timeout: float = 5.0) -> str:
        """Tare (``T``); same rules as :meth:`zero`. Returns "S" (done), "I", "+" or "-"."""
        return self._command("T", timeout)

    def _command(self, cmd: str, timeout: float) -> str:
        self._replies.pop(cmd, None)
        self.write(cmd.encode() + b"\r\n")
        deadline = time.monotonic() + timeout
        while cmd not in self._replies:
            if time.monotonic() > deadline:
                raise self._lost("no reply to", cmd, "within", timeout, "s")
            self._take_all(self._read_events(deadline - time.monotonic()))
        reply = self._replies.pop(cmd)
        self.log.info("scale_command", command=cmd, reply=reply)
        return [*reply.split(), "?"][1]
