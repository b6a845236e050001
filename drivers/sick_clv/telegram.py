"""SICK CLV/Lector CoLa A telegrams: the config that describes them and a pure parser.

Wire format (``docs/protocols.md`` §1.1; SICK CLV 410 manual p.43-46 for the output
format, Lector620 online help §5.8.7 and §5.10.5.2 for gate diagnostics and the heartbeat,
Wireshark ``epan/dissectors/packet-cola.c`` for CoLa A)::

    result      STX [gate SEP] [count SEP] code {SEP code} ETX    header_fields = ["gate", "count"]
    no-read     STX [gate SEP] [count SEP] NoRead ETX             text: noread = "NoRead"
    heartbeat   STX HB ETX                                        payload: heartbeat = "HB"
    answer      STX sAN mTCgateon 1 ETX                           1 = done, 0 = refused
    error       STX sFA <code> ETX

Example: ``\\x02000123;2;SF1234567890123;YT1234567890123\\x03`` is gate 123 with two codes.

Vendor details that are user-configured on the device, or not verified ([U] in docs/protocols.md),
are config keys here: the separator, which diagnostic fields precede the codes, the no-read
text, and the heartbeat payload. A ``count`` field is checked against the codes sent
(``check = "count"``). A mismatch means a cut or corrupted telegram, so it is the reject
``count_mismatch``. With a count, a no-read may report 0 or 1 codes [U]. A code field equal to
the no-read text inside a multi-code telegram is a no-read for that slot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import Field, model_validator

from drivers.reasons import RejectReason as R
from drivers.tunnel.config import Baud, TunnelConfig, code_text, counter
from edge_agent.errors import FrameError
from edge_agent.reading import Decoded, Kind

STX, ETX = 0x02, 0x03
#: CoLa A answer and event telegram types: parsed and counted, never readings.
COLA_ANSWERS = frozenset({"sAN", "sFA", "sRA", "sWA", "sEA", "sSN", "sMA"})


class SickClvConfig(TunnelConfig):
    """``type = "sick_clv"``: a SICK CLV6xx / Lector6xx on serial or TCP.

    Attributes:
        separator: between fields and codes, as configured in SOPAS.
        header_fields: diagnostic fields sent before the codes, in order: ``gate`` (the reading
            gate counter) and/or ``count`` (CC, codes in this gate).
        noread: the configured no-read ("error") string.
        heartbeat: the heartbeat telegram's payload [U: configurable on the device].
        heartbeat_publish: publish heartbeats as ``heartbeat`` readings. By default they are
            only counted (``SickClvDriver.heartbeats``).
        heartbeat_timeout_s: with a heartbeat enabled on the device, reconnect after this long
            with no byte at all (0: off). This catches a half-open TCP link or a hung reader.
        gate_trigger: ``external`` (photo-eye on the reader's input) or ``software``: the
            driver opens the gate with ``sMN mTCgateon`` every ``gate_period_ms`` and closes it
            ``gate_open_ms`` later (the read wakes when a gate is due).
    """

    type: Literal["sick_clv"]
    baudrate: Baud = 57600  # [U] CLV6xx host port default is often quoted as 57600 8N1
    separator: str = Field(default=";", min_length=1, max_length=4)
    header_fields: list[Literal["gate", "count"]] = Field(default_factory=list, max_length=2)
    noread: str = Field(default="NoRead", max_length=64)
    heartbeat: str = Field(default="HB", min_length=1, max_length=64)
    heartbeat_publish: bool = False
    heartbeat_timeout_s: float = Field(default=0.0, ge=0.0, le=3600.0)
    gate_trigger: Literal["external", "software"] = "external"
    gate_period_ms: int = Field(default=1000, ge=20, le=3_600_000)
    gate_open_ms: int = Field(default=200, ge=5, le=60_000)

    @model_validator(mode="after")
    def _consistent(self) -> SickClvConfig:
        if len(set(self.header_fields)) != len(self.header_fields):
            msg = "header_fields: each of 'gate', 'count' at most once"
            raise ValueError(msg)
        if self.gate_open_ms >= self.gate_period_ms:
            msg = f"gate_open_ms ({self.gate_open_ms}) must be below gate_period_ms"
            raise ValueError(msg)
        return self


@dataclass(frozen=True, slots=True)
class Telegram:
    """One parsed telegram.

    Args:
        kind: ``result`` (codes or no-read), ``heartbeat`` or ``answer`` (CoLa answer/event).
        readings: the readings a result holds (a heartbeat holds one ``heartbeat`` reading).
        answer: the CoLa tokens of an answer, e.g. ``("sAN", "mTCgateon", "1")``.
    """

    kind: Literal["result", "heartbeat", "answer"]
    readings: tuple[Decoded, ...] = ()
    answer: tuple[str, ...] = ()


def parse_telegram(frame: bytes, cfg: SickClvConfig) -> Telegram:
    """One ``STX ... ETX`` frame -> a telegram. Raises FrameError, nothing else."""
    if len(frame) < 2 or frame[0] != STX or frame[-1] != ETX:
        raise FrameError(R.GARBLED, "not an STX ... ETX telegram")
    text = code_text(frame[1:-1])
    if text == cfg.heartbeat:
        return Telegram("heartbeat", (Decoded(Kind.HEARTBEAT, None, frame, check="none"),))
    if text[:3] in COLA_ANSWERS and (len(text) == 3 or text[3] == " "):
        return Telegram("answer", answer=tuple(text.split(" ")))
    return Telegram("result", _result(frame, text, cfg))


def _result(frame: bytes, text: str, cfg: SickClvConfig) -> tuple[Decoded, ...]:
    fields = text.split(cfg.separator)
    n_head = len(cfg.header_fields)
    if len(fields) <= n_head:
        raise FrameError(R.GARBLED, f"expected {n_head} header fields and codes")
    head = dict(zip(cfg.header_fields, fields, strict=False))
    gate = counter(head.get("gate"), "gate counter")
    count = counter(head.get("count"), "code count")
    codes = fields[n_head:]
    check = "none" if count is None else "count"
    if codes in ([cfg.noread], [""]):
        if count not in (None, 0, 1):
            raise FrameError(R.COUNT_MISMATCH, f"no-read with code count {count}")
        return (Decoded(Kind.NOREAD, None, frame, check=check, gate=gate),)
    if "" in codes:
        raise FrameError(R.GARBLED, "empty code field")
    if count is not None and count != len(codes):
        raise FrameError(R.COUNT_MISMATCH, f"count field {count}, {len(codes)} codes sent")
    return tuple(
        Decoded(Kind.NOREAD, None, frame, check=check, gate=gate)
        if code == cfg.noread
        else Decoded(Kind.BARCODE, code, frame, check=check, gate=gate)
        for code in codes
    )
