"""What a HID scanner puts on the interrupt IN endpoint for a code, byte for byte (device side).

Written from ``docs/protocols.md`` independently of the driver's decoding tables, so a wrong
table on either side shows up as a failed test rather than as two matching mistakes.

Keyboard wedge (§2.2): one press report ``[mods, 0, usage, 0, 0, 0, 0, 0]`` and one all-zero
release report per character; LShift (0x02) for capitals and shifted symbols; the terminator key
(Enter 0x28) pressed and released last. GS (0x1D, GS1 FNC1) is typed as LCtrl (0x01) + ``]``
(0x30) or, with ``gs = "alt_numpad"``, as LAlt held while typing keypad 0 2 9 ([U], §2.2)::

    "SF1" + Enter:  02 00 16 00 ..  00 * 8   02 00 09 00 ..  00 * 8
                    00 00 1E 00 ..  00 * 8   00 00 28 00 ..  00 * 8

HID POS (§2.3): 64-byte reports ``[0x02, n, AIM(3), data(56, zero padded), code id, 0x00, more]``,
the data cut into 56-byte packets, ``more = 0x01`` on every packet but the last.
"""

from __future__ import annotations

import string

KEYBOARD_REPORT = 8
POS_REPORT = 64
POS_DATA = 56
LCTRL, LSHIFT, LALT = 0x01, 0x02, 0x04
ENTER, TAB = 0x28, 0x2B
RELEASE = bytes(KEYBOARD_REPORT)
ROLLOVER = bytes([0, 0, 1, 1, 1, 1, 1, 1])
#: Keypad digits 0-9 (keyboard page 0x62 = KP0, 0x59 = KP1 ... 0x61 = KP9).
KEYPAD = {str(d): 0x62 if d == 0 else 0x58 + d for d in range(10)}
#: Honeywell code id byte (report byte 61) per AIM id, from WebHidBarcodeScanner main.js.
CODE_IDS = {"]C0": 0x6A, "]C1": 0x49, "]E0": 0x64, "]E4": 0x44, "]A0": 0x62, "]I0": 0x65,
            "]d1": 0x77, "]d2": 0x77, "]Q1": 0x73, "]Q3": 0x73, "]L0": 0x72,
            "]z0": 0x7A}  # fmt: skip


def _us_keys() -> dict[str, tuple[int, int]]:
    """US layout, device side: character -> (modifier byte, usage id)."""
    keys: dict[str, tuple[int, int]] = {}
    for i, ch in enumerate(string.ascii_lowercase):
        keys[ch] = (0, 0x04 + i)
        keys[ch.upper()] = (LSHIFT, 0x04 + i)
    for i, (ch, sh) in enumerate(zip("1234567890", "!@#$%^&*()", strict=True)):
        keys[ch], keys[sh] = (0, 0x1E + i), (LSHIFT, 0x1E + i)
    usages = [0x2C, 0x2D, 0x2E, 0x2F, 0x30, 0x31, 0x33, 0x34, 0x35, 0x36, 0x37, 0x38]
    for usage, ch, sh in zip(usages, " -=[]\\;'`,./", ' _+{}|:"~<>?', strict=True):
        keys.setdefault(sh, (LSHIFT, usage))
        keys[ch] = (0, usage)
    return keys


US_KEYS = _us_keys()


def press(mods: int, *usages: int) -> bytes:
    """One boot keyboard report with ``usages`` down."""
    return bytes([mods, 0, *usages, *([0] * (6 - len(usages)))])


def key_reports(ch: str, gs: str = "ctrl") -> list[bytes]:
    """Reports typing one character (press + release). Raises KeyError if it has no key."""
    if ch == "\x1d" and gs == "alt_numpad":
        out = [press(LALT)]
        for digit in "029":
            out += [press(LALT, KEYPAD[digit]), press(LALT)]
        return [*out, RELEASE]
    if ch == "\x1d":
        return [press(LCTRL, US_KEYS["]"][1]), RELEASE]
    mods, usage = US_KEYS[ch]
    return [press(mods, usage), RELEASE]


def keyboard_reports(text: str, *, terminator: int = ENTER, gs: str = "ctrl") -> list[bytes]:
    """Every report a wedge scanner sends for ``text`` followed by its terminator key."""
    out: list[bytes] = []
    for ch in text:
        out += key_reports(ch, gs)
    return [*out, press(0, terminator), RELEASE]


def pos_reports(data: bytes, aim: str, *, report_id: int = 0x02) -> list[bytes]:
    """The HID POS packets for ``data`` scanned as symbology ``aim`` (e.g. ``"]C0"``)."""
    chunks = [data[i : i + POS_DATA] for i in range(0, len(data), POS_DATA)] or [b""]
    out = []
    for i, chunk in enumerate(chunks):
        report = bytearray(POS_REPORT)
        report[0], report[1] = report_id, len(chunk)
        report[2:5] = aim.encode("ascii")
        report[5 : 5 + len(chunk)] = chunk
        report[61] = CODE_IDS.get(aim, 0)
        report[63] = 1 if i < len(chunks) - 1 else 0
        out.append(bytes(report))
    return out


def split(blob: bytes, size: int) -> list[bytes]:
    """Cut concatenated reports into reports of ``size`` bytes (a short tail stays short)."""
    return [blob[i : i + size] for i in range(0, len(blob), size)]


# HID 1.11 Appendix B.1 boot keyboard report descriptor (8-byte input, 1-byte LED output).
BOOT_KEYBOARD_DESCRIPTOR = bytes.fromhex(
    "05 01 09 06 a1 01 05 07 19 e0 29 e7 15 00 25 01 75 01 95 08 81 02 95 01 75 08 81 01"
    "95 05 75 01 05 08 19 01 29 05 91 02 95 01 75 03 91 01 95 06 75 08 15 00 25 65 05 07"
    "19 00 29 65 81 00 c0"
)
# HID POS scanner [D, illustrative; not a byte copy of a Honeywell descriptor]: usage page 0x8C,
# usage 0x02 Bar Code Scanner; input report 2 (63 bytes after the id, usage 0x12 Scanned Data
# Report), output report 0xFD (commands), feature report 0xFE (HID POS on/off).
POS_DESCRIPTOR = bytes.fromhex(
    "06 8c 00 09 02 a1 01 15 00 26 ff 00 75 08"
    "85 02 95 3f 09 12 81 02"
    "85 fd 95 3f 09 12 91 02"
    "85 fe 95 01 09 12 b1 02 c0"
)
