"""The reading: a declared, frozen record, and its JSON form on MQTT (schema ``reading.v1``).

A driver's parser returns a :class:`Decoded` (what the bytes said). The device thread stamps it
with the clocks into a :class:`Capture`. The queue's writer gives it its identity, a UUIDv7 and
the device's next ``seq``, *before* the row is committed, so every retry reuses them (the
backend drops duplicates by ``id`` and finds gaps by ``seq``).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

SCHEMA_READING = "edge-agent/reading/v1"
SCHEMA_BATCH = "edge-agent/batch/v1"


class Kind(StrEnum):
    """What a reading is."""

    BARCODE = "barcode"
    NOREAD = "noread"
    WEIGHT = "weight"
    HEARTBEAT = "heartbeat"


@dataclass(frozen=True, slots=True)
class Decoded:
    """What one frame said, as a driver's parser returns it (a pure function of the bytes).

    Args:
        kind: what the frame is.
        value: the code text, the weight in grams, or None (noread).
        raw: the whole frame as received, framing bytes included.
        unit: unit as sent by the device ("g", "kg", "lb"); None for codes.
        symbology: symbology name where known ("code128", "gs1-128", "qr" ...).
        aim: the AIM symbology identifier as sent ("]C0"), if any.
        check: how integrity was checked ("none", "checksum", "gs1_mod10" ...).
        stable: for weights, whether the scale reported a stable value.
        gate: gate/trigger index where the device reports one.
        channel: sub-device on a shared link (the Modbus unit id of an indicator on a bus).
    """

    kind: Kind
    value: str | float | None
    raw: bytes
    unit: str | None = None
    symbology: str | None = None
    aim: str | None = None
    check: str | None = None
    stable: bool | None = None
    gate: int | None = None
    channel: int | None = None


@dataclass(frozen=True, slots=True)
class Capture:
    """A decoded frame stamped by the device thread with both clocks, not yet committed."""

    device: str
    decoded: Decoded
    wall_ns: int
    mono_ns: int
    #: Where the device thread journaled it: (generation, offset past it) (edge_agent.journal).
    mark: tuple[int, int] | None = None

    @classmethod
    def now(cls, device: str, decoded: Decoded) -> Capture:
        """Stamp ``decoded`` with the current wall and monotonic clocks."""
        return cls(device, decoded, time.time_ns(), time.monotonic_ns())


@dataclass(frozen=True, slots=True)
class Identity:
    """The node identity carried by every reading."""

    agent: str
    site: str
    line: str
    boot_id: str


@dataclass(frozen=True, slots=True)
class Reading:
    """One committed reading, exactly as published (see ``schemas/reading.v1.json``)."""

    id: str
    seq: int
    device: str
    capture: Capture
    node: Identity

    def to_dict(self) -> dict[str, Any]:
        """The MQTT payload as a dict; keys with None values are left out."""
        d = self.capture.decoded
        out: dict[str, Any] = {
            "schema": SCHEMA_READING,
            "id": self.id,
            "agent": self.node.agent,
            "site": self.node.site,
            "line": self.node.line,
            "device": self.device,
            "seq": self.seq,
            "kind": d.kind.value,
            "value": d.value,
            "ts": iso_utc(self.capture.wall_ns),
            "mono_ns": self.capture.mono_ns,
            "boot_id": self.node.boot_id,
            "raw": d.raw.hex(),
        }
        for key in ("unit", "symbology", "aim", "check", "stable", "gate", "channel"):
            val = getattr(d, key)
            if val is not None:
                out[key] = val
        return out

    def to_json(self) -> bytes:
        """Compact UTF-8 JSON; non-ASCII and control characters are escaped."""
        return json.dumps(self.to_dict(), separators=(",", ":")).encode()


#: The last second formatted by :func:`iso_utc` (readings of one second share it; the tuple
#: in it is replaced whole, so threads never see half of one).
_LAST_SECOND: list[tuple[int, str]] = [(-1, "")]


def iso_utc(wall_ns: int) -> str:
    """``2026-11-24T12:00:00.123456Z`` for a wall-clock time in ns."""
    sec = wall_ns // 1_000_000_000
    last = _LAST_SECOND[0]
    if last[0] != sec:
        stamp = dt.datetime.fromtimestamp(sec, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
        last = _LAST_SECOND[0] = (sec, stamp)
    return f"{last[1]}.{(wall_ns // 1000) % 1_000_000:06d}Z"


class _Uuid7Clock:
    """The millisecond and counter of the last UUIDv7, so ids never go back (RFC 9562 6.2).

    Method 1 of RFC 9562 section 6.2: the 12 ``rand_a`` bits are a counter, seeded at random
    (top bit clear, room to count) each new millisecond and incremented within one. If the
    wall clock steps back (NTP, an operator), the last millisecond is kept until the clock
    passes it again; a counter overflow moves the millisecond on by one. So the ids of one
    process are strictly increasing and never collide, whatever the wall clock does.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ms = 0
        self._counter = 0

    def next(self, seed: int) -> tuple[int, int]:
        """The (unix ms, 12-bit counter) for the next id; ``seed`` is 11 random bits."""
        now = time.time_ns() // 1_000_000
        with self._lock:
            if now > self._ms:
                self._ms, self._counter = now, seed
            elif self._counter < 0xFFF:
                self._counter += 1
            else:
                self._ms, self._counter = self._ms + 1, seed
            return self._ms, self._counter


_UUID7_CLOCK = _Uuid7Clock()


def uuid7() -> str:
    """A UUIDv7 (RFC 9562): 48-bit Unix ms, version 7, 12-bit counter, 62 random bits.

    Time-sortable, and strictly increasing within a process even if the wall clock steps back.
    """
    rand = int.from_bytes(os.urandom(10), "big")
    ms, counter = _UUID7_CLOCK.next((rand >> 62) & 0x7FF)
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= counter << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def boot_id() -> str:
    """The kernel's boot id: with ``mono_ns`` it orders readings within one boot."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"
