"""Parser: one code frame (raw reports) -> ``Decoded``. A pure function of bytes.

Keyboard wedge (``docs/protocols.md`` §2.2, US layout):

* Usage ids: ``a``-``z`` 0x04-0x1D, ``1``-``9`` ``0`` 0x1E-0x27, Enter 0x28, Esc 0x29,
  Backspace 0x2A, Tab 0x2B, Space 0x2C, ``-=[]\\`` 0x2D-0x31, ``;'`,./`` 0x33-0x38, keypad
  ``/*-+`` 0x54-0x57, keypad Enter 0x58, keypad ``1``-``9`` ``0`` ``.`` 0x59-0x63.
* Modifier byte: Shift 0x02/0x20 selects the shifted US symbol (``!`` = Shift + 0x1E).
  Ctrl 0x01/0x10 + key gives the ASCII control character (Ctrl+``]`` = GS 0x1D, the GS1 FNC1
  separator, §2.6). Alt 0x04/0x40 held while typing keypad digits gives the character with that
  decimal code when Alt is released (the Alt-numpad method; both GS forms are [U] per scanner).
* Rejects (``FrameError`` reasons): ``rollover`` (0x01 in all key slots), ``unknown_key`` (a
  usage id not in the table), ``bad_length`` (not a whole number of 8-byte reports).

HID POS (§2.3), per 64-byte packet::

    byte 0       report id (0x02)          byte 61      Honeywell code id (informational)
    byte 1       n = data bytes, <= 56     byte 62      0x00
    bytes 2-4    AIM id, e.g. ``]C0``      byte 63      0x01 more packets follow, 0x00 last
    bytes 5-60   data, zero padded

* Rejects: ``bad_length`` (n > 56, non-zero bytes after the n data bytes, or NUL inside them:
  the length byte disagrees with the packet), ``missing_continuation`` (AIM id changes inside a
  message: a new scan started before the last packet came), ``bad_aim``.

Both modes: the text must be UTF-8 without control characters except GS 0x1D (kept: it separates
GS1 AIs) else ``garbled``; ``]cm`` AIM ids (§2.5) name the symbology; empty text is ``empty``.
"""

from __future__ import annotations

import string

from drivers.common.aim import AIM_GS1, AIM_SYMBOLOGY, has_control
from drivers.common.framing import Event
from drivers.hid_scanner.config import TERMINATOR_KEYS, HidScannerConfig
from drivers.hid_scanner.framer import (
    KEYBOARD_REPORT,
    POS_DATA,
    POS_REPORT,
    RELEASED,
    ROLLOVER,
    pressed_keys,
)
from drivers.reasons import RejectReason as R
from edge_agent.errors import FrameError
from edge_agent.reading import Decoded, Kind

CTRL, SHIFT, ALT = 0x11, 0x22, 0x44
#: Keypad digit usage ids (for the Alt-numpad method): 0x59 = KP1 ... 0x61 = KP9, 0x62 = KP0.
KEYPAD_DIGITS = {0x59 + i: d for i, d in enumerate("1234567890")}


def _us_layout() -> dict[int, tuple[str, str]]:
    """US layout: usage id -> (character, character with Shift)."""
    table: dict[int, tuple[str, str]] = {}
    rows = [
        (0x04, string.ascii_lowercase, string.ascii_uppercase),
        (0x1E, "1234567890", "!@#$%^&*()"),
        (0x28, "\r\x1b\b\t -=[]\\", "\r\x1b\b\t _+{}|"),
        (0x33, ";'`,./", ':"~<>?'),
        (0x54, "/*-+\r1234567890.", "/*-+\r1234567890."),
    ]
    for first, plain, shifted in rows:
        for i, (a, b) in enumerate(zip(plain, shifted, strict=True)):
            table[first + i] = (a, b)
    return table


US_LAYOUT = _us_layout()


def decode_keys(frame: bytes, terminators: frozenset[int]) -> str:
    """The text typed by a keyboard frame, terminator excluded. Raises FrameError."""
    if not frame or len(frame) % KEYBOARD_REPORT:
        raise FrameError(R.BAD_LENGTH, f"{len(frame)} bytes: not whole 8-byte reports")
    out: list[str] = []
    prev, numpad = RELEASED, ""
    for i in range(0, len(frame), KEYBOARD_REPORT):
        report = frame[i : i + KEYBOARD_REPORT]
        if all(k == ROLLOVER for k in report[2:8]):
            raise FrameError(R.ROLLOVER, f"ErrorRollOver in report {i // KEYBOARD_REPORT}")
        mods = report[0]
        if numpad and not mods & ALT:
            out.append(chr(int(numpad) % 256))
            numpad = ""
        for key in pressed_keys(prev, report):
            if key in terminators:
                return "".join(out) + (chr(int(numpad) % 256) if numpad else "")
            if mods & ALT and key in KEYPAD_DIGITS:
                numpad += KEYPAD_DIGITS[key]
            else:
                out.append(_char(key, mods))
        prev = report
    return "".join(out)


def _char(key: int, mods: int) -> str:
    try:
        plain, shifted = US_LAYOUT[key]
    except KeyError:
        raise FrameError(R.UNKNOWN_KEY, f"usage id 0x{key:02x}") from None
    ch = shifted if mods & SHIFT else plain
    if mods & CTRL:
        base = ch.upper()
        if not "@" <= base <= "_":
            raise FrameError(R.UNKNOWN_KEY, f"Ctrl + usage id 0x{key:02x}")
        return chr(ord(base) - 0x40)
    return ch


def decode_pos(frame: bytes) -> tuple[bytes, bytes]:
    """(AIM id bytes, data) of a HID POS frame (one or more 64-byte packets). Raises FrameError."""
    if not frame or len(frame) % POS_REPORT:
        raise FrameError(R.BAD_LENGTH, f"{len(frame)} bytes: not whole 64-byte reports")
    aim = frame[2:5]
    data = bytearray()
    for i in range(0, len(frame), POS_REPORT):
        packet = frame[i : i + POS_REPORT]
        n = packet[1]
        body, pad = packet[5 : 5 + n], packet[5 + n : 5 + POS_DATA]
        if n > POS_DATA or any(pad) or 0 in body:
            raise FrameError(R.BAD_LENGTH, f"length byte {n} in packet {i // POS_REPORT}")
        if packet[2:5] != aim:
            raise FrameError(R.MISSING_CONTINUATION, f"AIM id changed to {packet[2:5]!r}")
        data += body
    return aim, bytes(data)


def parse_frame(frame: bytes, cfg: HidScannerConfig) -> Decoded:
    """One frame (raw reports) -> a decoded reading. Raises FrameError, nothing else."""
    aim: str | None = None
    if cfg.mode == "pos":
        aim_bytes, data = decode_pos(frame)
        aim = aim_bytes.decode("latin-1")
        text = _utf8(data)
        if cfg.pos_strip_cr:
            text = text.removesuffix("\n").removesuffix("\r")
    else:
        text = decode_keys(frame, TERMINATOR_KEYS[cfg.terminator])
        if cfg.aim_ids:
            aim, text = text[:3], text[3:]
    if len(text) > cfg.max_code_len:
        raise FrameError(R.OVERSIZE, f"{len(text)} characters")
    if has_control(text):
        raise FrameError(R.GARBLED, "control character in code")
    if text in cfg.noread:
        return Decoded(Kind.NOREAD, None, frame, check="none")
    symbology = _symbology(aim) if aim is not None else None
    if not text:
        raise FrameError(R.EMPTY, "no code data")
    return Decoded(Kind.BARCODE, text, frame, symbology=symbology, aim=aim, check="none")


def _utf8(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise FrameError(R.GARBLED, f"not UTF-8 at byte {err.start}") from None


def _symbology(aim: str) -> str:
    if len(aim) != 3 or aim[0] != "]":
        raise FrameError(R.BAD_AIM, f"missing AIM identifier, got {aim!r}")
    symbology = AIM_GS1.get(aim) or AIM_SYMBOLOGY.get(aim[1])
    if symbology is None:
        raise FrameError(R.BAD_AIM, f"unknown AIM identifier {aim!r}")
    return symbology


def parse_events(events: list[Event], cfg: HidScannerConfig) -> list[Decoded | str]:
    """Frames -> readings, rejects -> their reason (for captures, tests and the CLI)."""
    out: list[Decoded | str] = []
    for ev in events:
        if not isinstance(ev, bytes):
            out.append(ev.reason)
            continue
        try:
            out.append(parse_frame(ev, cfg))
        except FrameError as err:
            out.append(err.reason)
    return out
