"""AIM symbology identifiers (ISO/IEC 15424): ``]`` + code character + modifier.

Shared by every scanner driver that sees AIM ids (serial line scanners, HID POS, tunnel
scanners). Source: ``docs/protocols.md`` §2.5 (NCR programming reference, Datalogic KB).
"""

from __future__ import annotations

import re

#: GS (0x1D): FNC1 in GS1-128, the one control character a code may carry.
GS = "\x1d"
#: Every other C0 control and DEL: a transmission fault when found in code data.
_CONTROL = re.compile("[\x00-\x1c\x1e\x1f\x7f]")


def has_control(text: str) -> bool:
    """``text`` holds a C0 control character other than GS, or DEL (one regex scan, in C)."""
    return _CONTROL.search(text) is not None


#: AIM code character -> symbology name (ISO/IEC 15424; docs/protocols.md §2.5).
AIM_SYMBOLOGY = {
    "A": "code39",
    "C": "code128",
    "E": "ean-upc",
    "F": "codabar",
    "G": "code93",
    "I": "itf",
    "L": "pdf417",
    "Q": "qr",
    "X": "other",
    "d": "datamatrix",
    "e": "gs1-databar",
    "z": "aztec",
}
#: AIM ids whose data follow GS1 rules (FNC1 in first position).
AIM_GS1 = {"]C1": "gs1-128", "]d2": "gs1-datamatrix", "]Q3": "gs1-qr", "]e0": "gs1-databar"}
