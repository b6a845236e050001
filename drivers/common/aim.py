"""AIM symbology identifiers (ISO/IEC 15424): ``]`` + code character + modifier.

Shared by every scanner driver that sees AIM ids (serial line scanners, HID POS, tunnel
scanners). Source: ``docs/protocols.md`` §2.5 (NCR programming reference, Datalogic KB).
"""

from __future__ import annotations

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
