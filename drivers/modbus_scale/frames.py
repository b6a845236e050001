"""Modbus response ADUs (RTU and TCP) -> a weight reading. Pure functions of bytes.

Wire format (Modbus application protocol spec §6.3/§7, serial-line spec §2.5; byte examples
computed in docs/protocols.md §3.4 [D])::

    RTU  unit fc bytecount data... crc_lo crc_hi      01 03 0A 00 00 04 D2 00 00 04 D2 00 11 B6 4D
    RTU  unit fc|0x80 code crc_lo crc_hi              01 83 02 C0 F1   (exception 02)
    TCP  tid(2) pid=0(2) len(2) unit fc bytecount data...
         00 01 00 00 00 0D 01 03 0A 00 00 04 D2 00 00 04 D2 00 11

CRC-16/MODBUS: polynomial 0xA001 (reflected 0x8005), initial 0xFFFF, sent low byte first.
An exception response becomes ``FrameError(<exception name>)``: a counted value, not a crash.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from drivers.modbus_scale.config import ModbusScaleConfig
from drivers.modbus_scale.registers import Sample, decode_block
from drivers.reasons import RejectReason as R
from edge_agent.errors import FrameError
from edge_agent.reading import Decoded, Kind

FC = {"holding": 0x03, "input": 0x04}
#: Exception codes (application protocol spec §7) -> reject reason.
EXCEPTIONS = {
    0x01: R.ILLEGAL_FUNCTION,
    0x02: R.ILLEGAL_ADDRESS,
    0x03: R.ILLEGAL_VALUE,
    0x04: R.DEVICE_FAILURE,
    0x05: R.ACKNOWLEDGE,
    0x06: R.DEVICE_BUSY,
    0x08: R.MEMORY_PARITY_ERROR,
    0x0A: R.GATEWAY_PATH_UNAVAILABLE,
    0x0B: R.GATEWAY_NO_RESPONSE,
}
#: Every reject reason of the Modbus path: framing, classify_unanswered, registers, exceptions.
REJECTS = frozenset(
    {R.CRC, R.LENGTH, R.SHORT, R.NOISE, R.GARBLED, R.WRONG_UNIT, R.PROTOCOL_ID, R.FUNCTION,
     R.OUT_OF_RANGE, R.OVERLOAD, R.UNDER_ZERO, R.BAD_DECIMALS, R.NOT_FINITE, R.EXCEPTION_OTHER,
     *EXCEPTIONS.values()}
)  # fmt: skip
#: How a reading's integrity was checked, per transport.
CHECK = {"rtu": "crc16", "tcp": "tcp"}


def exception_name(code: int) -> R:
    """The reject reason for an exception code (``exception_other`` when not standard)."""
    return EXCEPTIONS.get(code, R.EXCEPTION_OTHER)


def crc16(data: bytes) -> int:
    """CRC-16/MODBUS of ``data`` as an integer (send it ``to_bytes(2, "little")``)."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def read_pdu(fc: int, words: Sequence[int]) -> bytes:
    """Response PDU of a register read: fc, byte count, big-endian words."""
    return bytes([fc, 2 * len(words)]) + b"".join(w.to_bytes(2, "big") for w in words)


def exception_pdu(fc: int, code: int) -> bytes:
    """Exception response PDU."""
    return bytes([fc | 0x80, code])


def rtu_adu(unit: int, pdu: bytes) -> bytes:
    """Unit id + PDU + CRC."""
    body = bytes([unit]) + pdu
    return body + crc16(body).to_bytes(2, "little")


def tcp_adu(tid: int, unit: int, pdu: bytes) -> bytes:
    """MBAP header (protocol id 0) + PDU."""
    return struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu


def split_adu(frame: bytes, transport: str) -> tuple[int, bytes]:
    """Check the framing of one ADU and return (unit id, PDU). Raises FrameError."""
    if transport == "rtu":
        if len(frame) < 5:
            raise FrameError(R.LENGTH, f"{len(frame)} bytes is shorter than any RTU response")
        if crc16(frame[:-2]) != int.from_bytes(frame[-2:], "little"):
            raise FrameError(R.CRC, "CRC-16 mismatch")
        return frame[0], frame[1:-2]
    if len(frame) < 9:
        raise FrameError(R.LENGTH, f"{len(frame)} bytes is shorter than any TCP response")
    _tid, pid, length, unit = struct.unpack(">HHHB", frame[:7])
    if pid != 0:
        raise FrameError(R.PROTOCOL_ID, f"MBAP protocol id {pid}")
    if length != len(frame) - 6:
        raise FrameError(R.LENGTH, f"MBAP length {length} for {len(frame) - 6} bytes")
    return unit, frame[7:]


def pdu_words(pdu: bytes, fc: int, count: int) -> list[int]:
    """The registers of a read response PDU. Exception responses raise FrameError(name)."""
    if pdu[0] == fc | 0x80 and len(pdu) == 2:
        raise FrameError(exception_name(pdu[1]), f"exception code 0x{pdu[1]:02x}")
    if pdu[0] != fc:
        raise FrameError(R.FUNCTION, f"function code 0x{pdu[0]:02x}, expected 0x{fc:02x}")
    if len(pdu) != 2 + 2 * count or pdu[1] != 2 * count:
        raise FrameError(R.LENGTH, f"byte count {pdu[1]} for {count} registers")
    return [int.from_bytes(pdu[i : i + 2], "big") for i in range(2, len(pdu), 2)]


def _crc_ok(frame: bytes) -> bool:
    return len(frame) >= 4 and crc16(frame[:-2]) == int.from_bytes(frame[-2:], "little")


def sound_tail(rx: bytes, unit: int, transport: str, count: int) -> bytes | None:
    """The response for ``unit`` that ``rx`` ends (or starts) with, junk dropped; else None.

    Decides when a wait for a response is over: pymodbus 3.16.1 keeps waiting the whole
    timeout after a frame it cannot use, and gives up on a sound frame behind line noise.
    """
    if transport == "tcp":
        return rx if len(rx) >= 9 and rx[6] == unit else None
    for n in (5 + 2 * count, 5):
        for frame in (rx[-n:], rx[:n]) if len(rx) >= n else ():
            if frame[0] == unit and _crc_ok(frame) and (n > 5 or frame[1] & 0x80):
                return frame
    return None


def complete(rx: bytes, transport: str, count: int) -> bool:
    """True when ``rx`` holds as many bytes as the longest answer to the request."""
    if transport == "tcp":
        return len(rx) >= 6 and len(rx) >= 6 + int.from_bytes(rx[4:6], "big")
    exception = len(rx) >= 5 and bool(rx[1] & 0x80)
    return exception or len(rx) >= 5 + 2 * count


def classify_unanswered(rx: bytes, unit: int, transport: str, count: int) -> str:
    """Why the bytes received for a request to ``unit`` made no response.

    Returns ``timeout`` (nothing came), ``wrong_unit`` (a sound frame from another unit id),
    ``noise`` (a sound frame behind junk bytes), ``short`` (cut off), ``crc`` (CRC mismatch)
    or ``garbled``. ``count`` is the number of registers requested.
    """
    if not rx:
        return "timeout"
    if transport == "tcp":
        if len(rx) >= 7 and rx[6] != unit:
            return R.WRONG_UNIT
        return (
            R.SHORT if len(rx) < 6 + int.from_bytes(rx[4:6].rjust(2, b"\0"), "big") else R.GARBLED
        )
    full = 5 + 2 * count
    for n in (full, 5):
        if len(rx) >= n and _crc_ok(rx[-n:]):
            if rx[-n] != unit:
                return R.WRONG_UNIT
            return R.NOISE if len(rx) > n else R.GARBLED
    exception = len(rx) >= 2 and rx[1] & 0x80
    return R.SHORT if len(rx) < full and not exception else R.CRC


def parse_frame(frame: bytes, cfg: ModbusScaleConfig) -> tuple[int, Sample]:
    """A response ADU to the driver's block read -> (unit id, sample).

    Raises:
        FrameError: bad framing/CRC, exception responses (reason = exception name), bad
            values, and weights that are not readings: ``overload``, ``under_zero`` and
            ``out_of_range`` (above ``max_weight_g``: also what a word-order mismatch gives).
    """
    m = cfg.registers
    unit, pdu = split_adu(frame, cfg.transport)
    sample = decode_block(pdu_words(pdu, FC[m.function], m.count), m)
    if sample.overload:
        raise FrameError(R.OVERLOAD, f"unit {unit}: over capacity ({sample.grams} g)")
    if sample.under_zero or sample.grams < -cfg.min_weight_g:
        raise FrameError(R.UNDER_ZERO, f"unit {unit}: {sample.grams} g")
    if sample.grams > cfg.max_weight_g:
        raise FrameError(R.OUT_OF_RANGE, f"unit {unit}: {sample.grams} g > {cfg.max_weight_g} g")
    return unit, sample


def to_decoded(frame: bytes, sample: Sample, cfg: ModbusScaleConfig) -> Decoded:
    """The reading for a sample: value in grams, unit "g", stability as decoded, unit id."""
    unit, _ = split_adu(frame, cfg.transport)
    return Decoded(
        Kind.WEIGHT,
        sample.grams,
        frame,
        unit="g",
        check=CHECK[cfg.transport],
        stable=sample.stable,
        gate=None,
        channel=unit,
    )
