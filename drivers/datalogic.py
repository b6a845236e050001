"""Datalogic fixed scanners (DS8110, DX8210, Matrix): ``STX code{,code} CR LF`` messages.

Wire format (``docs/protocols.md`` §1.3; DS8110 manual p.76-78, DX8210 manual p.84,
DX8200 PackTrack manual p.48)::

    <header> code [<sep> code ...] <terminator>       header STX, terminator CR LF, sep ","
    STX 0027110002054872550918034976966,1234567890123,0467,675898767566 CR LF
    STX ??????? CR LF                                   global no-read (one per gate)
    STX 918,?,0467,675898767566 CR LF                   local no-read in slot 2

* One reading per slot, in slot order. Every reading carries the whole message as ``raw``. A
  local no-read slot (``?``) is a ``noread`` reading, so a consumer can see which label of the
  combination was missing.
* The global no-read and the configured *Multiple Read Message* are each a single ``noread``
  reading. There is no ``multiread`` kind yet, so ``raw`` shows which of the two it was. With
  *Send All Multiple Read Labels*, the labels are split by ``multiread_separator`` as well and
  each becomes a barcode.
* Code Combination modes (Single Label, Standard Multi Label, Logical Combination, Code
  Collection) change which slots are sent, not the syntax. The parser accepts any number of
  slots.
* There is no gate counter in this format, so ``gate`` is None and duplicates cannot be told
  from a second parcel. PackTrack delays results until the parcel passes the TX line, so
  readings are timestamped at transmission, not at decode.
* The header, terminator, separators and no-read strings are set per device in Genius/DL.CODE,
  so each one is a config key.

Port strings (:mod:`drivers.common.link`): a serial port (``/dev/serial/by-id/...``),
``socket://ip:port`` for the scanner's TCP server or a serial-to-Ethernet gateway, or
``listen://0.0.0.0:<port>?allow=<ip>`` when the scanner connects to the line PC.
"""

from __future__ import annotations

import re
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from drivers.common.framing import STX, Event, Framer, StxEtxFramer, TerminatorFramer
from drivers.reasons import FRAMING, R
from drivers.tunnel.base import TunnelDriver
from drivers.tunnel.config import Baud, TunnelConfig, code_text
from edge_agent.errors import FrameError
from edge_agent.reading import Decoded, Kind

TERMINATORS = {"CR": b"\r", "LF": b"\n", "CRLF": b"\r\n", "ETX": b"\x03"}


class DatalogicConfig(TunnelConfig):
    """``type = "datalogic"``: a Datalogic DS/DX/Matrix fixed scanner."""

    type: Literal["datalogic"]
    baudrate: Baud = 9600  # [U] verify against the scanner's host port setting
    header: Literal["STX", "none"] = "STX"
    terminator: Literal["CRLF", "CR", "LF", "ETX"] = "CRLF"
    separator: str = Field(default=",", min_length=1, max_length=4)
    global_noread: str = Field(default="???????", min_length=1, max_length=64)
    local_noread: str = Field(default="?", min_length=1, max_length=16)
    multiread_text: str = Field(default="", max_length=64)
    multiread_separator: str = Field(default="", max_length=4)

    @model_validator(mode="after")
    def _consistent(self) -> DatalogicConfig:
        if self.header == "none" and self.terminator == "ETX":
            msg = "terminator = 'ETX' needs header = 'STX'"
            raise ValueError(msg)
        if self.multiread_separator and self.multiread_separator == self.separator:
            msg = "multiread_separator must differ from separator"
            raise ValueError(msg)
        return self


class StxLineFramer(Framer):
    """``STX payload TERMINATOR``: STX opens a frame; an STX inside an open frame cuts it."""

    def __init__(self, terminator: bytes, max_len: int, timeout: float) -> None:
        super().__init__(max_len, timeout)
        self.terminator = terminator

    def _byte(self, b: int, out: list[Event]) -> None:
        if b == STX:
            self._open(b, out)
        elif not self._in_frame:
            self._noise.append(b)
        elif self._skipping:
            if b == self.terminator[-1]:
                self._reset()
        else:
            self._grow(b, out)
            if not self._skipping and self._buf.endswith(self.terminator):
                out.append(bytes(self._buf))
                self._reset()


def make_framer(cfg: DatalogicConfig) -> Framer:
    """The framer the config describes."""
    term, timeout = TERMINATORS[cfg.terminator], cfg.inter_byte_timeout_ms / 1000
    if cfg.header == "none":
        return TerminatorFramer(term, cfg.max_frame, timeout)
    if cfg.terminator == "ETX":
        return StxEtxFramer(cfg.max_frame, timeout)
    return StxLineFramer(term, cfg.max_frame, timeout)


def parse_message(frame: bytes, cfg: DatalogicConfig) -> list[Decoded]:
    """One framed message -> one reading per slot. Raises FrameError, nothing else."""
    term = TERMINATORS[cfg.terminator]
    start = 1 if cfg.header == "STX" else 0
    if not frame.endswith(term) or (start and frame[:1] != b"\x02"):
        raise FrameError(R.GARBLED, "header or terminator missing")
    text = code_text(frame[start : -len(term)])
    if text == cfg.global_noread or (cfg.multiread_text and text == cfg.multiread_text):
        return [Decoded(Kind.NOREAD, None, frame, check="none")]
    seps = [cfg.separator] + ([cfg.multiread_separator] if cfg.multiread_separator else [])
    slots = re.split("|".join(map(re.escape, seps)), text)
    if "" in slots:
        raise FrameError(R.GARBLED if text else R.EMPTY, "empty slot")
    return [
        Decoded(Kind.NOREAD, None, frame, check="none")
        if slot == cfg.local_noread
        else Decoded(Kind.BARCODE, slot, frame, check="none")
        for slot in slots
    ]


class DatalogicDriver(TunnelDriver[DatalogicConfig]):
    """A Datalogic fixed scanner; one reading per code slot.

    Args:
        device_id: the config id (``[devices.<id>]``).
        cfg: validated :class:`DatalogicConfig`.
    """

    kind: ClassVar[str] = "datalogic"
    REJECTS: ClassVar[frozenset[R]] = FRAMING | {R.GARBLED, R.EMPTY, R.DUPLICATE}
    Config = DatalogicConfig

    def make_framer(self) -> Framer:
        """Framer for the configured header and terminator."""
        return make_framer(self.cfg)

    def decode(self, frame: bytes) -> list[Decoded]:
        """One reading per slot of a message. Raises FrameError."""
        return parse_message(frame, self.cfg)
