"""Register words <-> weight: pure functions shared by the driver and the simulator.

A weight value is decoded *per value* from its own registers, never by reversing the whole
register list (pymodbus ``convert_from_registers(word_order=...)`` reverses the list, not each
pair: pymodbus-dev/pymodbus#2675, docs/protocols.md §3.4). Example (docs/protocols.md §3.4, [D])::

    float32 1.234 as ABCD: 3F9D F3B6      as CDAB: F3B6 3F9D
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from drivers.modbus_scale.config import UNIT_GRAMS, RegisterMap
from drivers.reasons import RejectReason as R
from edge_agent.errors import FrameError

STRUCT = {"int16": "h", "uint16": "H", "int32": "i", "uint32": "I", "float32": "f"}
#: Range of the integer types; an indicator saturates rather than wrapping.
INT_RANGE = {
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
}


@dataclass(frozen=True, slots=True)
class Sample:
    """One poll of one unit, decoded.

    Args:
        grams: the weight in grams (rounded to 1 mg).
        stable: the status register's verdict; None when the map has no stable/motion bit.
        overload: over capacity (status bit).
        zero: centre of zero / empty platform (status bit).
        under_zero: below zero (status bit).
    """

    grams: float
    stable: bool | None
    overload: bool = False
    zero: bool = False
    under_zero: bool = False


def words_to_value(words: Sequence[int], m: RegisterMap) -> float:
    """The raw number held in ``words`` (``m.words`` registers) in the map's type and order."""
    ordered = list(words) if m.word_order == "big" else list(reversed(words))
    data = b"".join(w.to_bytes(2, m.byte_order) for w in ordered)
    value: float = struct.unpack(">" + STRUCT[m.weight_type], data)[0]
    return value


def value_to_words(value: float, m: RegisterMap) -> list[int]:
    """Inverse of :func:`words_to_value` (the simulator's encoder)."""
    fmt = STRUCT[m.weight_type]
    if fmt == "f":
        data = struct.pack(">f", value)
    else:
        low, high = INT_RANGE[m.weight_type]
        data = struct.pack(">" + fmt, min(max(round(value), low), high))
    words = [int.from_bytes(data[i : i + 2], m.byte_order) for i in range(0, len(data), 2)]
    return words if m.word_order == "big" else list(reversed(words))


def _bit(status: int | None, bit: int | None) -> bool:
    return status is not None and bit is not None and bool(status >> bit & 1)


def decode_block(words: Sequence[int], m: RegisterMap) -> Sample:
    """The block read per poll (``m.count`` words from ``m.start``) -> a sample.

    Raises:
        FrameError: ``length`` (wrong word count), ``not_finite`` (NaN/inf float),
            ``bad_decimals`` (decimal-point register outside 0..6).
    """
    if len(words) != m.count or any(not 0 <= w <= 0xFFFF for w in words):
        raise FrameError(R.LENGTH, f"expected {m.count} registers, got {len(words)}")
    off = m.weight_register - m.start
    raw = words_to_value(words[off : off + m.words], m)
    if not math.isfinite(raw):
        raise FrameError(R.NOT_FINITE, f"weight register holds {raw}")
    if m.weight_type == "float32":
        raw = float(f"{raw:.6g}")  # FLT_DIG = 6: further digits are binary-conversion noise
    decimals = m.decimals
    if m.decimals_register is not None:
        decimals = words[m.decimals_register - m.start]
        if decimals > 6:
            raise FrameError(R.BAD_DECIMALS, f"decimal-point register = {decimals}")
    grams = raw * m.scale / 10**decimals * UNIT_GRAMS[m.unit]
    if not math.isfinite(grams):
        raise FrameError(R.NOT_FINITE, f"weight {raw} scaled out of range")
    status = None if m.status_register is None else words[m.status_register - m.start]
    stable = None
    if m.has_stability:
        stable = (m.stable_bit is None or _bit(status, m.stable_bit)) and not _bit(
            status, m.motion_bit
        )
    return Sample(
        grams=round(grams, 3),
        stable=stable,
        overload=_bit(status, m.overload_bit),
        zero=_bit(status, m.zero_bit),
        under_zero=_bit(status, m.under_zero_bit),
    )


def encode_block(
    grams: float, m: RegisterMap, *, status: int = 0, decimals: int | None = None
) -> list[int]:
    """The block an indicator holding ``grams`` serves (the simulator's side).

    Args:
        grams: weight to encode.
        m: the register map.
        status: the status register value (see :func:`status_word`).
        decimals: value of the decimal-point register (defaults to ``m.decimals``).
    """
    dec = m.decimals if decimals is None else decimals
    words = [0] * m.count
    raw = grams / UNIT_GRAMS[m.unit] / m.scale * 10**dec
    off = m.weight_register - m.start
    words[off : off + m.words] = value_to_words(raw, m)
    if m.decimals_register is not None:
        words[m.decimals_register - m.start] = dec
    if m.status_register is not None:
        words[m.status_register - m.start] = status
    return words


def status_word(
    m: RegisterMap, *, stable: bool, overload: bool = False, zero: bool = False,
    under_zero: bool = False,
) -> int:  # fmt: skip
    """The status register value for these flags under map ``m``."""
    flags = (
        (m.stable_bit, stable),
        (m.motion_bit, not stable),
        (m.overload_bit, overload),
        (m.zero_bit, zero),
        (m.under_zero_bit, under_zero),
    )
    return sum(1 << bit for bit, on in flags if bit is not None and on)
