"""The data model of the tunnel scanner simulators: truth records, config, ports, waybills.

Waybill numbers follow the carrier patterns of docs/protocols.md §5.2 (public validators A and B),
plus GS1 SSCCs with a GS1 China prefix (§5.3). They are unique per simulator (``scanner_no``)
and per gate, so a test can match every published value to the gate it came from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

FAULTS = ("fragment", "coalesce", "noise", "garble", "partial", "noread", "late", "duplicate",
          "stall", "disconnect")  # fmt: skip


class SimPort(Protocol):
    """What a simulator writes to: :class:`TcpPort` or :class:`~simulators.pty_port.PtyPort`."""

    @property
    def url(self) -> str: ...
    def plug(self) -> str: ...
    def unplug(self) -> None: ...
    def write(self, data: bytes) -> int: ...
    def read(self) -> bytes: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class Truth:
    """One thing the simulator wrote (or failed to write).

    Args:
        n: gate number (0 for faults written between telegrams).
        kind: ``result``, ``duplicate``, ``fault``, ``cut`` (lost in a disconnect), ``stall``,
            ``heartbeat`` or ``answer``.
        values: the readings the agent must publish for it, in order (None: a no-read).
        gate: the gate counter the readings carry (None when the device sends none).
        reasons: the rejects the agent must count for it (a telegram can cause a reject and
            still give readings, e.g. after a doubled STX).
        delivered: whether the bytes were written to a connected host.
        t: wall-clock time of the trigger.
    """

    n: int
    kind: str
    values: tuple[str | None, ...] = ()
    gate: int | None = None
    reasons: tuple[str, ...] = ()
    delivered: bool = False
    t: float = 0.0


@dataclass
class SimConfig:
    """Timing, trigger and faults common to every tunnel scanner simulator."""

    rate: float = 5.0
    seed: int = 1
    scanner_no: int = 1
    trigger: str = "self"
    heartbeat_s: float = 0.0
    stall_s: float = 2.0
    unplug_s: float = 0.5
    client_wait_s: float = 5.0
    inter_byte_s: float = 0.2
    faults: dict[str, float] = field(default_factory=dict)


def sscc(data17: str) -> str:
    """17 digits + the GS1 mod-10 check digit (weights 3,1,3,... from the right)."""
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(data17)))
    return data17 + str((10 - total % 10) % 10)


#: (carrier, pattern from docs/protocols.md §5.2/§5.3, format(scanner digit, serial)).
CARRIERS: tuple[tuple[str, str, Callable[[int, int], str]], ...] = (
    ("SF", r"^SF[A-Z0-9]\d{12}$", lambda s, n: f"SF{s}{n:012d}"),
    ("ZTO", r"^7[3-68]\d{12}$", lambda s, n: f"75{s}{n:011d}"),
    ("YTO", r"^YT\d{13}$", lambda s, n: f"YT{s}{n:012d}"),
    ("STO", r"^(77|43)\d{12,15}$", lambda s, n: f"77{s}{n:012d}"),
    ("Yunda", r"^[34]\d{14}$", lambda s, n: f"4{s}{n:013d}"),
    ("J&T", r"^JT\d{13}$", lambda s, n: f"JT{s}{n:012d}"),
    ("JD", r"^JD[A-Z0-9]{2}\d{11}$", lambda s, n: f"JDVA{s}{n:010d}"),
    ("Cainiao", r"^621\d{12}$", lambda s, n: f"621{s}{n:011d}"),
    ("Deppon", r"^DPK\d{12}$", lambda s, n: f"DPK{s}{n:011d}"),
    ("SSCC", r"^00\d{18}$", lambda s, n: "00" + sscc(f"69{s}{n:014d}")),
)


def waybill(scanner_no: int, gate: int, slot: int = 0) -> str:
    """The code on label ``slot`` of the parcel in ``gate``: a carrier waybill or an SSCC."""
    _, _, fmt = CARRIERS[(gate + 3 * slot) % len(CARRIERS)]
    return fmt(scanner_no % 10, gate * 4 + slot)
