"""What a simulated indicator is: its configuration and the records of its truth log."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from drivers.modbus_scale.config import RegisterMap
from simulators import check_faults

#: Faults given as a probability per response (``overload``: per parcel).
FAULTS = ("crc", "wrong_unit", "silent", "noise", "short", "exception", "overload")
#: Faults that change the bytes of a response on its way out.
BYTE_FAULTS = ("crc", "wrong_unit", "silent", "noise", "short")
#: A map like the TUNA ID551PN / CAS CI-600D ones: int32 gross in kg with 3 decimals, status.
DEFAULT_MAP = RegisterMap(
    weight_register=0, weight_type="int32", unit="kg", decimals=3,
    status_register=2, stable_bit=0, motion_bit=1, zero_bit=2, overload_bit=3, under_zero_bit=4,
)  # fmt: skip


def registers_toml(m: RegisterMap, table: str = "devices.<id>.registers") -> str:
    """``m`` as the ``[registers]`` table of a device, every key spelled out (pasteable TOML)."""
    lines = [f"[{table}]"]
    for key, value in m.model_dump(exclude_none=True).items():
        text = json.dumps(value) if isinstance(value, str) else repr(value)
        lines.append(f"{key} = {text}")
    return "\n".join(lines)


@dataclass(frozen=True)
class Truth:
    """One thing the indicator did: a weight that ``settled`` (or an ``overload``), or a fault.

    ``start``/``end`` are monotonic seconds of the stable window (``end`` is inf while held).
    """

    n: int
    unit: int
    kind: str
    grams: float | None
    start: float
    end: float
    detail: str = ""
    wall: float = 0.0


@dataclass
class ScaleSimConfig:
    """What to simulate.

    Args:
        transport: ``rtu`` (RTU on a pty), ``rtu-tcp`` (RTU frames over TCP), ``tcp``.
        units: unit ids on the link.
        registers: the register map (the same schema as the driver's ``registers`` table).
        link: RTU: stable symlink to the device pty (like ``/dev/serial/by-id/...``).
        host, port: TCP: where to listen (port 0: any free port).
        auto: parcels come and go by themselves; False: only :meth:`ScaleSim.place`.
        rate: parcels per second per unit (upper bound).
        parcels: parcels per unit, then the platform stays empty (0: never stop).
        capacity_g: Max of the indicator (over it: the overload bit).
        faults: probabilities per response (see :data:`FAULTS`).
        swap_words: serve the weight in the other word order (a misconfigured map).
    """

    transport: Literal["rtu", "rtu-tcp", "tcp"] = "rtu"
    units: tuple[int, ...] = (1, 2)
    registers: RegisterMap = DEFAULT_MAP
    link: Path | None = None
    host: str = "127.0.0.1"
    port: int = 0
    baudrate: int = 19200
    auto: bool = True
    rate: float = 0.5
    parcels: int = 0
    seed: int = 1
    capacity_g: float = 30_000.0
    faults: dict[str, float] = field(default_factory=dict)
    swap_words: bool = False

    def __post_init__(self) -> None:
        check_faults(self.faults, FAULTS)
