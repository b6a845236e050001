"""The driver interface: one small ABC; the base class owns the public ``read()``.

Construction does no I/O, so the supervisor builds every driver from config first, then opens
each with retries. ``read()`` returns the next reading or None on timeout; a frame that cannot
be parsed is counted in ``rejects[reason]`` and logged, never raised, never dropped silently.
Link failures come out as :class:`~edge_agent.errors.DeviceIOError`.

A driver supplies two steps, each run once per frame:

* ``_read_events(timeout)``: the transport. Frames (bytes), framing rejects, and, for a driver
  whose library already decodes (Modbus), finished :class:`Decoded` readings;
* ``decode(frame)``: the frame's readings, 0..N of them (a tunnel telegram holds one per code; a
  command answer or heartbeat none). Raises FrameError, nothing else;

and, where it needs one, the hook ``_admit(frame, readings)``, run after ``decode`` and before
the screening below: the scales' settle filter, the tunnel scanners' duplicate check. It returns
the readings to keep and may raise FrameError (``duplicate``).

Whatever a driver's parser accepts is screened once more here, for every driver alike
(docs/reliability.md D16, T19): a code must be at most ``MAX_CODE_BYTES`` of UTF-8 made of printable
characters (GS, FNC1 in GS1-128, is the one control character kept; C0/C1 controls, DEL, bidi
and line-separator format characters, unassigned and private-use code points make a
``bad_code`` reject); a weight must be a finite number (``not_finite``). A parser that raises
anything but FrameError is a bug, counted as a ``parser_error`` reject and logged with its
traceback instead of killing the device thread (``_admit`` alike). ``raw`` is kept up to
``MAX_RAW_BYTES``.

Reject reasons are a closed set (:class:`~drivers.reasons.RejectReason`): each driver declares
the ones it can produce in ``REJECTS`` (the base's own, :data:`~drivers.reasons.BASE`, are
always allowed). A reason outside that set is a driver bug: it is counted as ``parser_error``
and logged (``undeclared_reject``), the same as a parser that raised.
"""

from __future__ import annotations

import abc
import dataclasses
import math
import time
import unicodedata
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Generic, TypeVar

import structlog

from drivers.common.aim import GS
from drivers.common.framing import KEEP, Event, Reject
from drivers.reasons import BASE, R
from edge_agent.errors import FrameError
from edge_agent.model import DeviceConfig
from edge_agent.reading import Decoded, Kind

C = TypeVar("C", bound=DeviceConfig)

#: Format characters that reorder or break the displayed text (Trojan-Source style) or lines.
_INVISIBLE = frozenset("\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
#: Unicode categories never accepted in a code: controls, surrogates, private use, unassigned.
_BAD_CATEGORIES = frozenset({"Cc", "Cs", "Co", "Cn"})


def code_problem(text: str, max_bytes: int) -> str | None:
    """Why ``text`` is not an acceptable code value (None: it is).

    Printable ASCII or assigned, printable Unicode; GS (0x1D) allowed; at most ``max_bytes``
    bytes of UTF-8.
    """
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        return f"{size} bytes > {max_bytes}"
    if text.isascii() and text.isprintable():
        return None  # the common case, checked in C
    for i, ch in enumerate(text):
        if ch != GS and (ch in _INVISIBLE or unicodedata.category(ch) in _BAD_CATEGORIES):
            return f"character U+{ord(ch):04X} at {i}"
    return None


@dataclass(frozen=True, slots=True)
class DetectedDevice:
    """A device found on this PC (for ``edge-agent ports``)."""

    kind: str
    port: str
    description: str


class Driver(abc.ABC, Generic[C]):
    """One physical device, read by one thread.

    Args:
        device_id: the config id (``[devices.<id>]``).
        cfg: the driver's validated ``Config``.
    """

    kind: ClassVar[str]
    Config: ClassVar[type[DeviceConfig]]
    #: Longest code value accepted, bytes of UTF-8 (D16); a driver reading long 2D codes
    #: documents and raises it.
    MAX_CODE_BYTES: ClassVar[int] = 128
    #: Longest ``raw`` kept with a reading (bytes; stored as hex): bounds a queue row.
    MAX_RAW_BYTES: ClassVar[int] = 1024
    #: Device actions a technician or the backend may ask for (``zero``, ``tare``): each is a
    #: method of the driver taking no argument and returning the device's reply as text, run
    #: in the device thread (``DeviceWorker.call``). Reached through the control socket's
    #: ``{"cmd": "device", "device": ID, "action": NAME}``.
    ACTIONS: ClassVar[frozenset[str]] = frozenset()
    #: The reject reasons this driver can produce besides the base's own (:data:`BASE`);
    #: listed per driver in docs/drivers.md.
    REJECTS: ClassVar[frozenset[R]] = frozenset()

    def __init__(self, device_id: str, cfg: C) -> None:
        self.device_id = device_id
        self.cfg = cfg
        self.rejects: Counter[str] = Counter()
        #: Frames (and library-decoded readings) taken in, rejected or not.
        self.frames = 0
        #: Readings decoded and screened, not yet returned by ``read()``.
        self._pending: deque[Decoded] = deque()
        #: Called with (device_id, reason, frame) on every reject (the daemon's live view).
        self.on_reject: Callable[[str, str, bytes], None] | None = None
        self.log = structlog.get_logger("drivers").bind(device=device_id, driver=self.kind)

    @property
    def address(self) -> str | None:
        """Where the device is, for a technician: a port path, or ``host:port`` for TCP."""
        port = getattr(self.cfg, "port", None)
        if isinstance(port, str) and port.startswith(("socket://", "listen://")):
            return port.partition("://")[2].split("?")[0]
        return port if isinstance(port, str) else None

    @abc.abstractmethod
    def open(self) -> None:
        """Open the device. Raises DeviceNotFoundError / DeviceInitError."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the device; idempotent. Pending partial frames are dropped with it."""

    def retire(self) -> None:
        """The device left the configuration (a reload removed or changed it): close it and
        release what outlives a close (a ``listen://`` port)."""
        self.close()

    @abc.abstractmethod
    def _read_events(self, timeout: float) -> Sequence[Event | Decoded]:
        """Wait up to ``timeout`` s for bytes; return frames and rejects. Raises DeviceIOError."""

    @abc.abstractmethod
    def decode(self, frame: bytes) -> Sequence[Decoded]:
        """Every reading one frame holds (0..N). Raises FrameError, nothing else."""

    def _admit(self, frame: bytes, readings: Sequence[Decoded]) -> Sequence[Decoded]:
        """The readings of ``frame`` to keep (settle, deduplicate). Raises FrameError."""
        del frame
        return readings

    def read(self, timeout: float = 0.5) -> Decoded | None:
        """The next reading, or None after ``timeout`` s. Counts and logs rejects."""
        deadline = time.monotonic() + timeout
        while not self._pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self._take_all(self._read_events(remaining))
        return self._pending.popleft()

    def _take_all(self, events: Sequence[Event | Decoded]) -> None:
        for event in events:
            self._pending.extend(self._take(event))

    def _take(self, event: Event | Decoded) -> list[Decoded]:
        """The screened readings of one event; rejects counted."""
        if isinstance(event, Reject):
            self._reject(event.reason, event.data, event.detail)
            return []
        self.frames += 1
        readings: Sequence[Decoded] = [event] if isinstance(event, Decoded) else []
        if isinstance(event, Decoded):
            frame = event.raw
        else:
            frame = event
            try:
                readings = self._admit(frame, self.decode(frame))
            except FrameError as err:
                self._reject(err.reason, frame, err.detail)
                return []
            except Exception as err:  # a parser bug must not end the device thread
                self.log.exception("parser_error", error=repr(err), frame_hex=frame[:256].hex(" "))
                self._reject(R.PARSER_ERROR, frame, type(err).__name__)
                return []
        return [s for d in readings if (s := self._screen_value(d, frame)) is not None]

    def _screen_value(self, d: Decoded, frame: bytes) -> Decoded | None:
        """The checks every driver's output passes (see the module docstring)."""
        if d.kind is Kind.BARCODE:
            problem = (
                code_problem(d.value, self.MAX_CODE_BYTES)
                if isinstance(d.value, str)
                else f"value of type {type(d.value).__name__}"
            )
            if problem is not None:
                self._reject(R.BAD_CODE, frame, problem)
                return None
        elif d.kind is Kind.WEIGHT and not (
            isinstance(d.value, int | float) and math.isfinite(d.value)
        ):
            self._reject(R.NOT_FINITE, frame, f"weight {d.value!r}")
            return None
        if len(d.raw) > self.MAX_RAW_BYTES:
            return dataclasses.replace(d, raw=d.raw[: self.MAX_RAW_BYTES])
        return d

    @classmethod
    def allowed_rejects(cls) -> frozenset[R]:
        """Every reason this driver may count: its declared ``REJECTS`` and the base's own."""
        return BASE | cls.REJECTS

    def _reject(self, reason: str, data: bytes, detail: str = "") -> None:
        if reason not in self.allowed_rejects():
            self.log.error("undeclared_reject", reason=str(reason), detail=detail)
            detail, reason = f"undeclared reason {reason!r}: {detail}", R.PARSER_ERROR
        reason = str(reason)  # the plain string: counters and events as before the enum
        self.rejects[reason] += 1
        self.log.warning(
            "frame_rejected", reason=reason, detail=detail, frame_hex=data[:KEEP].hex(" ")
        )
        if self.on_reject is not None:
            self.on_reject(self.device_id, reason, data)

    @staticmethod
    def detect() -> list[DetectedDevice]:
        """Devices of this kind present on the PC (for ``edge-agent ports``)."""
        return []
