"""Report framers: interrupt-IN reports -> one frame per scanned code. Pure state machines.

A frame is the raw reports of one code, concatenated, so ``Decoded.raw`` is exactly what came
over the wire and the parser can be tested on its own. Framers never raise; what cannot be part
of a frame comes out as a :class:`~drivers.common.framing.Reject` (L4/L5). Feeding a capture whole
or one report at a time gives the same events (tests check it).

Keyboard wedge (``docs/protocols.md`` §2.2), 8-byte boot reports::

    [modifiers, 0x00, key1, key2, key3, key4, key5, key6]     a press
    [0x00] * 8                                                all keys released

* A frame opens at the first non-zero report and ends with the report that presses the
  terminator key (Enter 0x28 by default). Release reports between codes are not frames.
* A key is *pressed* when it is in this report but not in the previous one, or when the report
  repeats the previous one or changes only its modifiers: a scanner never holds a key (it types
  press + release within milliseconds, and with usbhid's idle rate 0 a device only reports
  changes), so such a report means the release between two characters was lost. A keyboard
  with a human on it would differ; this driver is for scanners.
* ErrorRollOver (``0x01`` in all six slots) stays in the frame; the parser rejects it.
* No terminator within ``key_timeout_ms`` of the last report: ``partial``.

HID POS (§2.3), 64-byte reports: ``[id, n, aim0, aim1, aim2, data(56), code_id, 0, more]``.

* Packets are collected until one has ``more == 0`` (byte 63); that packet closes the frame.
* Report id other than ``pos_report_id``: ``bad_report_id``. A message whose next packet does not
  come within ``pos_continuation_timeout_ms``: ``missing_continuation``.

Both: a read that is not a whole number of reports gives ``bad_length``; a frame longer than the
configured code length gives ``oversize``.
"""

from __future__ import annotations

import abc

from drivers.common.framing import KEEP, Event, Reject
from drivers.hid_scanner.config import TERMINATOR_KEYS, HidScannerConfig
from drivers.reasons import RejectReason as R

KEYBOARD_REPORT = 8
POS_REPORT = 64
#: Data bytes per HID POS packet (bytes 5..60).
POS_DATA = 56
#: Key slot value meaning "too many keys down" (HID Usage Tables, Keyboard page 0x01).
ROLLOVER = 0x01
RELEASED = bytes(KEYBOARD_REPORT)


def pressed_keys(prev: bytes, report: bytes) -> list[int]:
    """Keys newly pressed by ``report`` after ``prev`` (8-byte boot reports), in slot order."""
    keys = [k for k in report[2:8] if k]
    if report[2:8] == prev[2:8] or report[0] != prev[0]:
        return keys  # the release in between was lost (see the module docstring)
    return [k for k in keys if k not in prev[2:8]]


class ReportFramer(abc.ABC):
    """Incremental framer over fixed-size reports.

    Args:
        size: report length in bytes.
        timeout: seconds after the last report at which an unfinished frame is rejected.
        max_reports: most reports one frame may hold.
    """

    #: Reject reason of a frame left unfinished for longer than ``timeout``.
    TIMEOUT_REASON = R.PARTIAL

    def __init__(self, size: int, timeout: float, max_reports: int) -> None:
        self.size = size
        self.timeout = timeout
        self.max_reports = max_reports
        self._buf = bytearray()
        self._skipping = False
        self._last = 0.0

    def feed(self, data: bytes, now: float) -> list[Event]:
        """Take one read's ``data`` (whole reports) received at ``now``; return finished events."""
        if not data:
            return []
        out = self.expire(now)
        whole = len(data) - len(data) % self.size
        for i in range(0, whole, self.size):
            self._report(data[i : i + self.size], out)
        if whole != len(data):
            out.append(Reject(R.BAD_LENGTH, data[whole:][:KEEP]))
        self._last = now
        return out

    def expire(self, now: float) -> list[Event]:
        """Reject a frame left open for longer than the timeout."""
        if not (self._buf or self._skipping) or now - self._last <= self.timeout:
            return []
        out: list[Event] = []
        if self._buf:
            out.append(Reject(self.TIMEOUT_REASON, bytes(self._buf[:KEEP])))
        self._buf.clear()
        self._skipping = False
        return out

    def _add(self, report: bytes, out: list[Event]) -> None:
        if self._skipping:
            return
        self._buf += report
        if len(self._buf) > self.max_reports * self.size:
            out.append(Reject(R.OVERSIZE, bytes(self._buf[:KEEP])))
            self._buf.clear()
            self._skipping = True

    def _close(self, out: list[Event]) -> None:
        if not self._skipping:
            out.append(bytes(self._buf))
        self._buf.clear()
        self._skipping = False

    @abc.abstractmethod
    def _report(self, report: bytes, out: list[Event]) -> None: ...


class KeyboardFramer(ReportFramer):
    """Boot-keyboard reports -> one frame per code, ended by the terminator key."""

    def __init__(self, terminators: frozenset[int], timeout: float, max_len: int) -> None:
        # press + release per character, a shift/ctrl report each at most, and Alt-numpad runs
        super().__init__(KEYBOARD_REPORT, timeout, max_reports=8 * max_len + 16)
        self.terminators = terminators
        self._prev = RELEASED

    def _report(self, report: bytes, out: list[Event]) -> None:
        keys = pressed_keys(self._prev, report)
        self._prev = report
        if not self._buf and not self._skipping and report == RELEASED:
            return  # release reports between codes
        self._add(report, out)
        if any(k in self.terminators for k in keys):
            self._close(out)


class PosFramer(ReportFramer):
    """HID POS reports -> one frame per message (packets until the continuation flag is 0)."""

    TIMEOUT_REASON = R.MISSING_CONTINUATION

    def __init__(self, report_id: int, timeout: float, max_len: int) -> None:
        super().__init__(POS_REPORT, timeout, max_reports=max_len // POS_DATA + 2)
        self.report_id = report_id

    def _report(self, report: bytes, out: list[Event]) -> None:
        if report[0] != self.report_id:
            out.append(Reject(R.BAD_REPORT_ID, report))
            return
        self._add(report, out)
        if report[63] == 0:
            self._close(out)


def make_framer(cfg: HidScannerConfig) -> ReportFramer:
    """The framer for the configured mode."""
    if cfg.mode == "pos":
        timeout = cfg.pos_continuation_timeout_ms / 1000
        return PosFramer(cfg.pos_report_id, timeout, cfg.max_code_len)
    timeout = cfg.key_timeout_ms / 1000
    return KeyboardFramer(TERMINATOR_KEYS[cfg.terminator], timeout, cfg.max_code_len)
