"""An in-process driver fed from a queue, for pipeline tests that are not about bytes.

Like python-can's ``VirtualBus``: every ``VirtualDriver`` with the same ``channel`` in one
process shares a queue; :func:`send` puts frames on it. Frames are UTF-8 code text; the
literal ``NoRead`` becomes a noread reading and a frame starting with ``!`` is rejected as
``garbled`` (so the reject path can be exercised without a port).
"""

from __future__ import annotations

import queue
from collections.abc import Sequence
from typing import ClassVar, Literal

from drivers.base import Driver
from drivers.common.framing import Event
from drivers.reasons import R
from edge_agent.errors import DeviceIOError, FrameError
from edge_agent.model import DeviceConfig, Ident
from edge_agent.reading import Decoded, Kind

_CHANNELS: dict[str, queue.SimpleQueue[bytes | None]] = {}


def send(channel: str, frame: bytes | None) -> None:
    """Deliver ``frame`` to the virtual device on ``channel``; None simulates an unplug."""
    _CHANNELS.setdefault(channel, queue.SimpleQueue()).put(frame)


class VirtualConfig(DeviceConfig):
    """``type = "virtual"``: ``channel`` names the in-process queue."""

    type: Literal["virtual"]
    channel: Ident = "default"


class VirtualDriver(Driver[VirtualConfig]):
    """Reads frames from an in-process queue."""

    kind: ClassVar[str] = "virtual"
    REJECTS: ClassVar[frozenset[R]] = frozenset({R.GARBLED})
    Config = VirtualConfig

    def open(self) -> None:
        """Attach to the channel's queue."""
        self._q = _CHANNELS.setdefault(self.cfg.channel, queue.SimpleQueue())

    def close(self) -> None:
        """Nothing to release."""

    def _read_events(self, timeout: float) -> Sequence[Event | Decoded]:
        try:
            frame = self._q.get(timeout=timeout)
        except queue.Empty:
            return []
        if frame is None:
            msg = f"virtual channel {self.cfg.channel} unplugged"
            raise DeviceIOError(msg)
        return [frame]

    def decode(self, frame: bytes) -> list[Decoded]:
        """The frame's one reading; ``!...`` is ``garbled``."""
        if frame.startswith(b"!"):
            raise FrameError(R.GARBLED, "frame starts with '!'")
        text = frame.decode("utf-8", errors="replace")
        if text == "NoRead":
            return [Decoded(Kind.NOREAD, None, frame)]
        return [Decoded(Kind.BARCODE, text, frame, symbology=None, check="none")]
