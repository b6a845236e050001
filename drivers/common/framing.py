"""Framers: turn a byte stream into frames. Pure state machines over (bytes, time).

A framer never raises on bad input. Bytes that cannot be part of a frame come out as a
:class:`Reject` with a reason: ``noise`` (bytes between frames), ``partial`` (a frame cut off by a
new start byte or by the inter-byte timeout), ``oversize`` (longer than ``max_len``). Feeding a
recording whole or one byte at a time gives the same output (tests check it).

Wire forms:

* :class:`StxEtxFramer`: ``STX(0x02) payload ETX(0x03)`` (SICK, Datalogic, many fixed scanners).
* :class:`TerminatorFramer`: ``payload TERMINATOR`` with CR, LF or CR LF (handhelds, CDC mode).
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import ClassVar

from drivers.reasons import RejectReason as R

STX = 0x02
ETX = 0x03
#: Bytes seen between frames on real lines (power-up 0x00/0xFF bursts, XON/XOFF, stray CR/LF).
LINE_NOISE = frozenset(b"\x00\xff\x11\x13\r\n")
#: Bytes of a rejected frame kept for the log line and the counters.
KEEP = 256


@dataclass(frozen=True, slots=True)
class Reject:
    """Bytes that did not make a frame, and why."""

    reason: str
    data: bytes
    detail: str = ""


Event = bytes | Reject


class Framer(abc.ABC):
    """Incremental framer.

    Args:
        max_len: longest frame accepted, framing bytes included.
        timeout: inter-byte timeout in seconds; a frame left open longer is rejected.
    """

    def __init__(self, max_len: int, timeout: float) -> None:
        self.max_len = max_len
        self.timeout = timeout
        self._buf = bytearray()
        self._noise = bytearray()
        self._in_frame = False
        self._skipping = False
        self._last = 0.0

    def feed(self, data: bytes, now: float) -> list[Event]:
        """Take ``data`` received at ``now`` (monotonic seconds); return finished events.

        Gaps are judged only by :meth:`expire` after a read that found the line silent: a reader
        that was late (CPU starved) gets bytes that arrived together, and that is not a gap.
        """
        out: list[Event] = []
        for b in data:
            self._byte(b, out)
        if data:
            self._last = now
        return out

    def expires_at(self) -> float:
        """When :meth:`expire` would cut what is open (a frame, a noise run); inf if nothing."""
        if self._in_frame or self._skipping or self._noise:
            return self._last + self.timeout
        return math.inf

    def expire(self, now: float) -> list[Event]:
        """Reject a frame (or noise run) left open for longer than the inter-byte timeout."""
        if now - self._last <= self.timeout:
            return []
        out: list[Event] = []
        if self._in_frame and not self._skipping and self._buf:
            out.append(Reject(R.PARTIAL, bytes(self._buf[:KEEP])))
        self._reset()
        self._flush_noise(out)
        return out

    def _reset(self) -> None:
        self._buf.clear()
        self._in_frame = False
        self._skipping = False

    def _flush_noise(self, out: list[Event]) -> None:
        if self._noise:
            out.append(Reject(R.NOISE, bytes(self._noise[:KEEP])))
            self._noise.clear()

    def _grow(self, b: int, out: list[Event]) -> None:
        if self._skipping:
            return
        self._buf.append(b)
        if len(self._buf) > self.max_len:
            out.append(Reject(R.OVERSIZE, bytes(self._buf[:KEEP])))
            self._buf.clear()
            self._skipping = True

    def _open(self, b: int, out: list[Event]) -> None:
        """Start a frame with start byte ``b``; a frame still open is cut (``partial``)."""
        if self._in_frame and not self._skipping:
            out.append(Reject(R.PARTIAL, bytes(self._buf[:KEEP])))
        self._flush_noise(out)
        self._reset()
        self._in_frame = True
        self._buf.append(b)

    @abc.abstractmethod
    def _byte(self, b: int, out: list[Event]) -> None: ...


class StxEtxFramer(Framer):
    """``STX payload ETX``; the emitted frame includes STX and ETX.

    A subclass with other ``START`` / ``END`` bytes frames ``LF payload CR`` (SMA) the same way.
    """

    START: ClassVar[int] = STX
    END: ClassVar[int] = ETX

    def _byte(self, b: int, out: list[Event]) -> None:
        if b == self.START:
            self._open(b, out)
        elif not self._in_frame:
            self._noise.append(b)
        elif b == self.END:
            if not self._skipping:
                self._buf.append(b)
                out.append(bytes(self._buf))
            self._reset()
        else:
            self._grow(b, out)


class TerminatorFramer(Framer):
    """``payload TERMINATOR``; the emitted frame includes the terminator.

    Args:
        terminator: b"\\r", b"\\n" or b"\\r\\n".
        max_len: longest frame accepted, terminator included.
        timeout: inter-byte timeout in seconds.
    """

    def __init__(self, terminator: bytes, max_len: int, timeout: float) -> None:
        super().__init__(max_len, timeout)
        self.terminator = terminator

    def feed(self, data: bytes, now: float) -> list[Event]:
        """As :meth:`Framer.feed`; whole lines found with ``bytes.find`` (10x the byte loop).

        The fast path takes a line only from the idle state, starting with a non-noise byte
        and short enough: exactly what the byte loop would emit. Everything else (noise, a
        line split across reads, oversize) goes through the byte loop.
        """
        out: list[Event] = []
        term, i, end = self.terminator, 0, len(data)
        while i < end:
            if not (self._in_frame or self._skipping) and data[i] not in LINE_NOISE:
                j = data.find(term, i, i + self.max_len)
                if j != -1:
                    self._flush_noise(out)
                    out.append(data[i : j + len(term)])
                    i = j + len(term)
                    continue
            self._byte(data[i], out)
            i += 1
        if data:
            self._last = now
        return out

    def _byte(self, b: int, out: list[Event]) -> None:
        if not self._in_frame:
            if b in LINE_NOISE:
                self._noise.append(b)
                return
            self._flush_noise(out)
            self._in_frame = True
        self._grow(b, out)
        if self._skipping:
            self._tail(b, out)
            return
        if self._buf.endswith(self.terminator):
            out.append(bytes(self._buf))
            self._reset()

    def _tail(self, b: int, out: list[Event]) -> None:
        # skipping an oversize line: it ends at the terminator's last byte
        del out  # nothing to emit: the oversize reject was already counted
        if b == self.terminator[-1]:
            self._reset()
