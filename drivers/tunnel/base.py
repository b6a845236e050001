"""The shared base of the fixed tunnel scanner drivers: SICK CLV/Lector, Cognex DataMan, Datalogic.

A tunnel scanner is a :class:`~drivers.common.stream.StreamDriver` (port, framer, read loop,
``replay``) with two things more:

* **one telegram, several readings**: a tunnel scanner reports every code of a reading gate in
  one telegram; ``decode`` returns them all, each with the whole telegram as ``raw`` and the
  same ``gate``. Answers and heartbeats are counted in ``answers`` by ``decode`` and give no
  reading;
* **duplicates**: a telegram that carries a gate or trigger counter and is byte-identical to one
  of the last ``dedup_window`` such telegrams is dropped as the reject ``duplicate``. This is a
  device repeating its output (docs/protocols.md §0.3). Without a counter, two identical
  telegrams can be two parcels, so both are published.

Outgoing commands (software triggers) are written by ``_tick`` before each read, so one thread
owns the port.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Sequence
from typing import TypeVar

from drivers.common.stream import StreamDriver
from drivers.reasons import RejectReason as R
from drivers.tunnel.config import TunnelConfig
from edge_agent.errors import FrameError
from edge_agent.reading import Decoded

TC = TypeVar("TC", bound=TunnelConfig)


class TunnelDriver(StreamDriver[TC]):
    """A fixed scanner: framer and decode supplied by the subclass, duplicates dropped here.

    Args:
        device_id: the config id (``[devices.<id>]``).
        cfg: the driver's validated config.
    """

    def __init__(self, device_id: str, cfg: TC) -> None:
        super().__init__(device_id, cfg)
        self._recent: deque[bytes] = deque(maxlen=cfg.dedup_window)
        #: Command answers and device messages that are not readings, by kind.
        self.answers: Counter[str] = Counter()

    def _admit(self, frame: bytes, readings: Sequence[Decoded]) -> Sequence[Decoded]:
        """Drop a telegram with a gate counter that repeats one of the last ``dedup_window``."""
        if readings and readings[0].gate is not None and self.cfg.dedup_window:
            if frame in self._recent:
                raise FrameError(R.DUPLICATE, "same bytes as a recent telegram")
            self._recent.append(frame)
        return readings
