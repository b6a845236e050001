"""Serial line scanner: fixed or handheld barcode scanner sending one ASCII line per read.

Wire format (configurable, see ``docs/protocols.md`` §1.1, §1.3, §2.4)::

    framing = "stx_etx":     STX [prefix] [AIM id] data [suffix] ETX
    framing = "terminator":  [prefix] [AIM id] data [suffix] CR | LF | CR LF

* ``data`` is the code text; GS (0x1D, FNC1 in GS1-128) is kept, other control bytes make the
  frame ``garbled``. The configured no-read strings (``NoRead``, ``???????``, ``NR`` ...) give a
  ``noread`` reading.
* ``]cm`` AIM symbology identifiers are decoded when ``aim_ids = true`` (§2.5); with it on, a
  frame without one is rejected (it is the tail of a cut-off frame). Without AIM ids or a
  prefix, a frame cut at its start cannot be told from a short code: configure one of them.
* Sources: SICK CLV/Lector output format (STX/ETX, configurable error string), Datalogic
  DS8110 (STX ... CR LF), handhelds in CDC mode (CR suffix). Vendor defaults vary: every one of
  these is a config key, none is hard-wired.

Port strings: see :mod:`drivers.common.link` (device nodes, ``socket://``, ``listen://``).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field
from serial.tools import list_ports

from drivers.base import DetectedDevice
from drivers.common.aim import AIM_GS1, AIM_SYMBOLOGY, has_control
from drivers.common.framing import Framer, StxEtxFramer, TerminatorFramer
from drivers.common.link import LinkConfig
from drivers.common.stream import StreamDriver
from drivers.reasons import FRAMING, R
from edge_agent.errors import FrameError
from edge_agent.reading import Decoded, Kind

TERMINATORS = {"CR": b"\r", "LF": b"\n", "CRLF": b"\r\n"}


class SerialLineScannerConfig(LinkConfig):
    """``type = "serial_line_scanner"`` (port settings: :class:`LinkConfig`)."""

    type: Literal["serial_line_scanner"]
    framing: Literal["stx_etx", "terminator"] = "terminator"
    terminator: Literal["CR", "LF", "CRLF"] = "CRLF"
    prefix: str = ""
    suffix: str = ""
    noread: list[str] = Field(default_factory=lambda: ["NoRead"])
    max_frame: int = Field(default=512, ge=8, le=65536)
    inter_byte_timeout_ms: int = Field(default=100, ge=1, le=10_000)
    aim_ids: bool = False


def make_framer(cfg: SerialLineScannerConfig) -> Framer:
    """The framer the config describes."""
    timeout = cfg.inter_byte_timeout_ms / 1000
    if cfg.framing == "stx_etx":
        return StxEtxFramer(cfg.max_frame, timeout)
    return TerminatorFramer(TERMINATORS[cfg.terminator], cfg.max_frame, timeout)


def parse_frame(frame: bytes, cfg: SerialLineScannerConfig) -> Decoded:
    """One frame (framing bytes included) -> a decoded reading. Raises FrameError."""
    body = _unframe(frame, cfg)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise FrameError(R.GARBLED, f"not UTF-8 at byte {err.start}") from None
    text = _strip_affixes(text, cfg)
    if has_control(text):
        raise FrameError(R.GARBLED, "control character in code")
    if text in cfg.noread:
        return Decoded(Kind.NOREAD, None, frame, check="none")
    aim, symbology = None, None
    if cfg.aim_ids:
        # A scanner set to send AIM ids sends them on every code; a frame without one is the
        # tail of a frame cut off (e.g. read partly before a restart), not a code.
        if len(text) < 3 or text[0] != "]":
            raise FrameError(R.GARBLED, "missing AIM identifier")
        aim, text = text[:3], text[3:]
        symbology = AIM_GS1.get(aim) or AIM_SYMBOLOGY.get(aim[1])
        if symbology is None:
            raise FrameError(R.GARBLED, f"unknown AIM identifier {aim!r}")
    if not text:
        raise FrameError(R.EMPTY, "no code data")
    return Decoded(Kind.BARCODE, text, frame, symbology=symbology, aim=aim, check="none")


def _unframe(frame: bytes, cfg: SerialLineScannerConfig) -> bytes:
    if cfg.framing == "stx_etx":
        return frame[1:-1]
    return frame[: -len(TERMINATORS[cfg.terminator])]


def _strip_affixes(text: str, cfg: SerialLineScannerConfig) -> str:
    if cfg.prefix:
        if not text.startswith(cfg.prefix):
            raise FrameError(R.BAD_PREFIX, f"expected prefix {cfg.prefix!r}")
        text = text[len(cfg.prefix) :]
    if cfg.suffix:
        if not text.endswith(cfg.suffix):
            raise FrameError(R.BAD_SUFFIX, f"expected suffix {cfg.suffix!r}")
        text = text[: -len(cfg.suffix)]
    return text


class SerialLineScannerDriver(StreamDriver[SerialLineScannerConfig]):
    """A scanner on a serial port (RS-232, USB CDC-ACM, USB-serial adapter, serial-over-TCP)."""

    kind: ClassVar[str] = "serial_line_scanner"
    REJECTS: ClassVar[frozenset[R]] = FRAMING | {R.GARBLED, R.EMPTY, R.BAD_PREFIX, R.BAD_SUFFIX}
    Config = SerialLineScannerConfig

    def make_framer(self) -> Framer:
        """The framer the config describes."""
        return make_framer(self.cfg)

    def decode(self, frame: bytes) -> list[Decoded]:
        """The one reading of a line. Raises FrameError."""
        return [parse_frame(frame, self.cfg)]

    @staticmethod
    def detect() -> list[DetectedDevice]:
        """Serial ports with their USB ids (``edge-agent ports``)."""
        return [
            DetectedDevice("serial_line_scanner", p.device, f"{p.description} [{p.hwid}]")
            for p in list_ports.comports()
        ]
