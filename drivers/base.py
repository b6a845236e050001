"""The driver interface: one small ABC; the base class owns the public ``read()``.

Construction does no I/O, so the supervisor builds every driver from config first, then opens
each with retries. ``read()`` returns the next decoded frame or None on timeout; a frame that
cannot be parsed is counted in ``rejects[reason]`` and logged, never raised, never dropped
silently. Link failures come out as :class:`~edge_agent.errors.DeviceIOError`.
"""

from __future__ import annotations

import abc
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Generic, TypeVar

import structlog

from drivers.common.framing import Event, Reject
from edge_agent.config import DeviceConfig
from edge_agent.errors import FrameError
from edge_agent.reading import Decoded

C = TypeVar("C", bound=DeviceConfig)


@dataclass(frozen=True, slots=True)
class DetectedDevice:
    """A device found on this PC (for ``edge-agent ports``)."""

    kind: str
    port: str
    description: str


class Driver(abc.ABC, Generic[C]):
    """One physical device, read by one thread.

    Args:
        device_id: the config id (``[devices.<id>]``).
        cfg: the driver's validated ``Config``.
    """

    kind: ClassVar[str]
    Config: ClassVar[type[DeviceConfig]]

    def __init__(self, device_id: str, cfg: C) -> None:
        self.device_id = device_id
        self.cfg = cfg
        self.rejects: Counter[str] = Counter()
        self.frames = 0
        self._pending: deque[Event] = deque()
        #: Called with (device_id, reason, frame) on every reject (the daemon's live view).
        self.on_reject: Callable[[str, str, bytes], None] | None = None
        self.log = structlog.get_logger("drivers").bind(device=device_id, driver=self.kind)

    @abc.abstractmethod
    def open(self) -> None:
        """Open the device. Raises DeviceNotFoundError / DeviceInitError."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the device; idempotent. Pending partial frames are dropped with it."""

    @abc.abstractmethod
    def _read_events(self, timeout: float) -> list[Event]:
        """Wait up to ``timeout`` s for bytes; return frames and rejects. Raises DeviceIOError."""

    @abc.abstractmethod
    def _parse(self, frame: bytes) -> Decoded:
        """Turn one frame into a decoded reading. Raises FrameError, nothing else."""

    def read(self, timeout: float = 0.5) -> Decoded | None:
        """The next decoded frame, or None after ``timeout`` s. Counts and logs rejects."""
        deadline = time.monotonic() + timeout
        while True:
            while self._pending:
                decoded = self._take(self._pending.popleft())
                if decoded is not None:
                    return decoded
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self._pending.extend(self._read_events(remaining))

    def _take(self, event: Event) -> Decoded | None:
        if isinstance(event, Reject):
            self._reject(event.reason, event.data)
            return None
        self.frames += 1
        try:
            return self._parse(event)
        except FrameError as err:
            self._reject(err.reason, event, err.detail)
            return None

    def _reject(self, reason: str, data: bytes, detail: str = "") -> None:
        self.rejects[reason] += 1
        self.log.warning("frame_rejected", reason=reason, detail=detail, frame_hex=data.hex(" "))
        if self.on_reject is not None:
            self.on_reject(self.device_id, reason, data)

    @staticmethod
    def detect() -> list[DetectedDevice]:
        """Devices of this kind present on the PC (for ``edge-agent ports``)."""
        return []
