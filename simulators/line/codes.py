"""Codes and reading.v1 fields the simulated devices produce (``docs/protocols.md`` section 5)."""

from __future__ import annotations

import random
import time
from typing import Any

from edge_agent.waybill import gs1_check_digit, s10_check_digit

_MS = 1_000_000

#: Carrier numbers of :func:`waybill`; the last one (10) is a GS1 SSCC (a logistic label).
CARRIERS = ("sf", "zto", "yto", "sto", "yunda", "jt", "jd", "ems", "cainiao", "deppon", "sscc")


def waybill(carrier: int, n: int) -> str:
    """A valid code of carrier number ``carrier`` (index into :data:`CARRIERS`), serial ``n``.

    ``n`` below 10**8 keeps every form at its carriers' length.
    """
    s8 = f"{n:08d}"[-8:]
    forms = {
        "sf": lambda: f"SF{n % 10}{n:012d}",
        "zto": lambda: f"7{'34568'[n % 5]}{n:012d}",
        "yto": lambda: f"YT{n:013d}",
        "sto": lambda: f"77{n:013d}",
        "yunda": lambda: f"46{n:013d}",
        "jt": lambda: f"JT{n:013d}",
        "jd": lambda: f"JDVA{n:011d}",
        "ems": lambda: f"E{'ABCDE'[n % 5]}{s8}{s10_check_digit(s8)}CN",
        "cainiao": lambda: f"621{n:012d}",
        "deppon": lambda: f"DPK{n:012d}",
        "sscc": lambda: "00" + (d := f"0690123{n:010d}") + str(gs1_check_digit(d)),
    }
    return forms[CARRIERS[carrier]]()


def invalid_code(kind: int, n: int) -> tuple[str, str]:
    """An invalid code of ``kind`` (0..3) with serial ``n``, and the reason a table gives.

    0: SSCC with a wrong check digit, 1: UPU S10 with a wrong check digit, 2: a truncated SF
    waybill, 3: a YTO waybill in lower case.
    """
    if kind % 4 == 0:
        data = f"0690123{n:010d}"
        return f"00{data}{(gs1_check_digit(data) + 1) % 10}", "check_digit"
    if kind % 4 == 1:
        s8 = f"{n:08d}"[-8:]
        return f"EA{s8}{(s10_check_digit(s8) + 1) % 10}CN", "check_digit"
    if kind % 4 == 2:
        return f"SF{n:08d}", "no_pattern"
    return f"yt{n:013d}", "no_pattern"


def details(kind: str, value: str | float | None, stable: bool | None) -> dict[str, Any]:
    """The reading.v1 fields a driver adds for ``kind``: symbology, AIM, unit, stable, raw."""
    if kind == "barcode":
        aim = "]C1" if str(value).startswith("00") and len(str(value)) == 20 else "]C0"
        sym = "gs1-128" if aim == "]C1" else "code128"
        raw = b"\x02" + aim.encode() + str(value).encode() + b"\x03"
        return {"symbology": sym, "aim": aim, "check": "none", "raw": raw.hex()}
    if kind == "weight":
        grams = float(value) if isinstance(value, int | float) else 0.0
        raw = f"{'S' if stable else 'D'} {grams / 1000:9.3f} kg\r\n".encode()
        return {"unit": "g", "stable": bool(stable), "check": "none", "raw": raw.hex()}
    return {"raw": b"\x02NoRead\x03".hex()}


def iso(wall_ns: int) -> str:
    """reading.v1's ``ts`` form: UTC, microseconds, ``Z``."""
    s = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(wall_ns // 1_000_000_000))
    return f"{s}.{(wall_ns // 1000) % 1_000_000:06d}Z"


def uuid7(wall_ns: int, rng: random.Random) -> str:
    """A UUIDv7 for ``wall_ns`` with its random bits from ``rng`` (reproducible per seed)."""
    ms = wall_ns // _MS
    rand = rng.getrandbits(74)
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | (rand >> 62) << 64
    value |= 0b10 << 62 | (rand & ((1 << 62) - 1))
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
