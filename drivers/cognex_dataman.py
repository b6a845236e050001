"""Cognex DataMan fixed reader: result strings and DMCC responses, CR LF terminated.

Wire format (``docs/protocols.md`` §1.2; Cognex *DataMan Communications & Programming*,
DMCC overview, docs.cognex.com ``dmst_2310/.../dmcc-main.html`` and manualslib p.18-19)::

    result (silent mode)   [index SEP] code CR LF             "Format Data" output
    no-read                NoRead CR LF | CR LF | nothing      noread_mode = text | empty | none
    DMCC response          || [ck[:id]] [status] data [X] CR LF
    command (host)         || [ck[:id]] > TRIGGER ON [X] CR LF

* DMCC response header ``||checksum:command-id[status]``. Status 1 is a reader-initiated read
  string, which becomes readings. Status 0 is an acknowledgement, and 100-105 are errors
  (103 = checksum incorrect). Answers are counted in ``answers``, and errors are logged.
* With checksum mode 1, the last byte before CR LF is the XOR of the preceding bytes. Which
  bytes are covered is [U], so ``checksum_span`` chooses: ``line`` (from the first ``|``) or
  ``payload`` (after the header). A mismatch is the reject ``checksum``.
* [U] DM100/200 firmware 3.5 sends read strings base64-encoded in extended mode
  (``extended_base64``).
* [U] the trigger index (``trigger.index``) in front of the code is a Format Data setting
  (``index_field``), not a factory default. When present, it becomes the reading's ``gate``.
* Triggers: with ``trigger_period_ms > 0``, the driver sends ``||>TRIGGER ON`` (with a command
  id and a checksum when ``command_checksum``) on that period. Otherwise the reader's own
  photo-eye triggers it.

Port strings (:mod:`drivers.common.link`): ``socket://<ip>:23`` (the DataMan default TCP port),
``listen://0.0.0.0:<port>?allow=<ip>`` (the reader as a TCP client), or a serial port (115200
8N1 is commonly quoted [U]).
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import time
from dataclasses import dataclass
from functools import reduce
from typing import ClassVar, Literal

from pydantic import Field

from drivers.common.framing import Event, Framer, TerminatorFramer
from drivers.reasons import FRAMING, R
from drivers.tunnel.base import TunnelDriver
from drivers.tunnel.config import Baud, TunnelConfig, code_text, counter
from edge_agent.errors import FrameError
from edge_agent.reading import Decoded, Kind

TERMINATORS = {"CR": b"\r", "LF": b"\n", "CRLF": b"\r\n"}
HEADER = re.compile(rb"\|\|(?:(?P<ck>[01])(?::(?P<id>\d*))?)?\[(?P<status>\d{1,3})\]")
#: DMCC status codes (manualslib p.19).
STATUS = {0: "ok", 1: "read string", 100: "unidentified error", 101: "command invalid",
          102: "parameter invalid", 103: "checksum incorrect", 104: "rejected by state",
          105: "reader unavailable"}  # fmt: skip


class CognexDatamanConfig(TunnelConfig):
    """``type = "cognex_dataman"``: a DataMan on TCP (``socket://host:23``) or serial."""

    type: Literal["cognex_dataman"]
    baudrate: Baud = 115200
    terminator: Literal["CR", "LF", "CRLF"] = "CRLF"
    noread_mode: Literal["none", "empty", "text"] = "text"
    noread_text: str = Field(default="NoRead", min_length=1, max_length=64)
    index_field: bool = False
    index_separator: str = Field(default=",", min_length=1, max_length=4)
    extended_base64: bool = False
    checksum_span: Literal["line", "payload"] = "line"
    trigger_period_ms: int = Field(default=0, ge=0, le=3_600_000)
    command_checksum: bool = False


def xor(data: bytes) -> int:
    """XOR of every byte (the DMCC checksum)."""
    return reduce(lambda a, b: a ^ b, data, 0)


def command(text: str, command_id: int | None = None, *, checksum: bool = False) -> bytes:
    """A DMCC command line: ``||>TRIGGER ON\\r\\n`` or ``||1:7>TRIGGER ON<xor>\\r\\n``."""
    if checksum:
        head = f"||1:{command_id}>" if command_id is not None else "||1>"
        line = (head + text).encode()
        return line + bytes([xor(line)]) + b"\r\n"
    head = f"||0:{command_id}>" if command_id is not None else "||>"
    return (head + text).encode() + b"\r\n"


@dataclass(frozen=True, slots=True)
class Line:
    """One parsed line: ``result`` (readings) or ``answer`` (a DMCC status, no reading)."""

    kind: Literal["result", "answer"]
    readings: tuple[Decoded, ...] = ()
    status: int | None = None


def parse_line(frame: bytes, cfg: CognexDatamanConfig) -> Line:
    """One terminated line -> result or answer. Raises FrameError, nothing else."""
    body = frame[: -len(TERMINATORS[cfg.terminator])]
    if body.startswith(b"||"):
        return _dmcc(frame, body, cfg)
    return Line("result", (_result(frame, body, cfg, "none"),))


def _dmcc(frame: bytes, body: bytes, cfg: CognexDatamanConfig) -> Line:
    m = HEADER.match(body)
    if m is None:
        raise FrameError(R.GARBLED, "bad DMCC response header")
    payload, check = body[m.end() :], "none"
    if m["ck"] == b"1":
        if not payload:
            raise FrameError(R.GARBLED, "checksum byte missing")
        covered = body[:-1] if cfg.checksum_span == "line" else payload[:-1]
        if xor(covered) != body[-1]:
            raise FrameError(R.CHECKSUM, f"XOR {xor(covered):02x}, sent {body[-1]:02x}")
        payload, check = payload[:-1], "checksum"
    status = int(m["status"])
    if status != 1:
        if status not in STATUS:
            raise FrameError(R.GARBLED, f"unknown DMCC status {status}")
        return Line("answer", status=status)
    if cfg.extended_base64:
        try:
            payload = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise FrameError(R.GARBLED, "read string is not base64") from None
    return Line("result", (_result(frame, payload, cfg, check),))


def _result(frame: bytes, data: bytes, cfg: CognexDatamanConfig, check: str) -> Decoded:
    text, gate = code_text(data), None
    if cfg.index_field:
        index, sep, text = text.partition(cfg.index_separator)
        if not sep:
            raise FrameError(R.GARBLED, "trigger index field missing")
        gate = counter(index, "trigger index")
    if (cfg.noread_mode == "text" and text == cfg.noread_text) or (
        cfg.noread_mode == "empty" and not text
    ):
        return Decoded(Kind.NOREAD, None, frame, check=check, gate=gate)
    if not text:
        raise FrameError(R.EMPTY, "no code data")
    return Decoded(Kind.BARCODE, text, frame, check=check, gate=gate)


class EmptyLineFramer(TerminatorFramer):
    """A :class:`TerminatorFramer` that also emits empty lines (the ``empty`` no-read)."""

    def _byte(self, b: int, out: list[Event]) -> None:
        if not self._in_frame and b == self.terminator[0]:
            self._flush_noise(out)
            self._in_frame = True
        super()._byte(b, out)


class CognexDatamanDriver(TunnelDriver[CognexDatamanConfig]):
    """A Cognex DataMan fixed reader.

    Args:
        device_id: the config id (``[devices.<id>]``).
        cfg: validated :class:`CognexDatamanConfig`.
    """

    kind: ClassVar[str] = "cognex_dataman"
    REJECTS: ClassVar[frozenset[R]] = FRAMING | {R.GARBLED, R.EMPTY, R.CHECKSUM, R.DUPLICATE}
    Config = CognexDatamanConfig

    def __init__(self, device_id: str, cfg: CognexDatamanConfig) -> None:
        super().__init__(device_id, cfg)
        #: Triggers sent (``||>TRIGGER ON``).
        self.triggers_sent = 0
        self._next_trigger = 0.0

    def make_framer(self) -> Framer:
        """Line framer; empty lines are frames only in the ``empty`` no-read mode."""
        cfg = self.cfg
        cls = EmptyLineFramer if cfg.noread_mode == "empty" else TerminatorFramer
        return cls(TERMINATORS[cfg.terminator], cfg.max_frame, cfg.inter_byte_timeout_ms / 1000)

    def decode(self, frame: bytes) -> list[Decoded]:
        """The reading of one line; a DMCC answer is counted, no reading. Raises FrameError."""
        line = parse_line(frame, self.cfg)
        if line.kind == "answer" and line.status is not None:
            self.answers[f"status {line.status}"] += 1
            if line.status >= 100:
                self.log.warning("dmcc_error", status=line.status, text=STATUS[line.status])
        return list(line.readings)

    def _on_open(self) -> None:
        self._next_trigger = time.monotonic()

    def _due(self, now: float) -> float:
        return self._next_trigger - now if self.cfg.trigger_period_ms else math.inf

    def _tick(self, now: float) -> None:
        period = self.cfg.trigger_period_ms / 1000
        if not period or now < self._next_trigger:
            return
        self.triggers_sent += 1
        cid = self.triggers_sent % 10_000 if self.cfg.command_checksum else None
        self.write(command("TRIGGER ON", cid, checksum=self.cfg.command_checksum))
        self._next_trigger += period
        if self._next_trigger < now:  # fell behind: skip, do not burst
            self._next_trigger = now + period
