"""Zebra DS fixed scanner: ``<code id> data CR LF``, a 2-character symbology prefix first.

Sources, the prefix table and the no-read text ``NR``: docs/new-device.md (the worked example)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from drivers.common.framing import Framer, TerminatorFramer
from drivers.common.link import LinkConfig
from drivers.common.stream import StreamDriver
from drivers.reasons import FRAMING, R
from edge_agent.errors import FrameError
from edge_agent.reading import Decoded, Kind

#: Prefix -> symbology: the AIM code character + modifier [U]; a site's own in ``symbologies``.
SYMBOLOGIES = {"C0": "code128", "C1": "gs1-128", "E0": "ean-upc", "E4": "ean-8", "A0": "code39",
               "I0": "itf", "d1": "datamatrix", "Q1": "qr", "L0": "pdf417"}  # fmt: skip


class ZebraDsConfig(LinkConfig):
    """``type = "zebra_ds"`` (port settings: :class:`LinkConfig`)."""

    type: Literal["zebra_ds"]
    symbologies: dict[str, str] = Field(default_factory=lambda: dict(SYMBOLOGIES))
    noread: str = "NR"
    max_frame: int = Field(default=512, ge=8, le=65536)
    inter_byte_timeout_ms: int = Field(default=100, ge=1, le=10_000)


def parse(frame: bytes, cfg: ZebraDsConfig) -> Decoded:
    """One ``<id> data CR LF`` line -> a reading. Raises FrameError."""
    try:
        text = frame[:-2].decode("utf-8")
    except UnicodeDecodeError as err:
        raise FrameError(R.GARBLED, f"not UTF-8 at byte {err.start}") from None
    if cfg.noread in (text, text[2:]):
        return Decoded(Kind.NOREAD, None, frame, check="none")
    symbology = cfg.symbologies.get(text[:2])
    if symbology is None and text:
        raise FrameError(R.GARBLED, f"unknown symbology prefix {text[:2]!r}")
    if len(text) <= 2:
        raise FrameError(R.EMPTY, "no code data")
    return Decoded(Kind.BARCODE, text[2:], frame, symbology=symbology, check="none")


class ZebraDsDriver(StreamDriver[ZebraDsConfig]):
    """A Zebra DS fixed scanner on a serial port (or serial-over-TCP)."""

    kind: ClassVar[str] = "zebra_ds"
    Config = ZebraDsConfig
    REJECTS: ClassVar[frozenset[R]] = FRAMING | {R.GARBLED, R.EMPTY}

    def make_framer(self) -> Framer:
        return TerminatorFramer(b"\r\n", self.cfg.max_frame, self.cfg.inter_byte_timeout_ms / 1000)

    def decode(self, frame: bytes) -> list[Decoded]:
        return [parse(frame, self.cfg)]
