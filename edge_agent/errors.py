"""The one exception tree of edge-agent, split by what the caller does next.

::

    EdgeAgentError
     +-- ConfigError            fix the file; the daemon exits 78 (EX_CONFIG), no restart
     +-- DeviceError
     |    +-- DeviceNotFoundError   port absent -> supervisor retries with backoff
     |    +-- DeviceInitError       opened, but settings refused
     |    +-- DeviceIOError         link broke mid-run -> close, reopen
     +-- FrameError(reason)     never escapes Driver.read(); becomes a counted reject
     +-- QueueError             SQLite full/corrupt/misconfigured
     +-- PublishError(rc)       str() renders the MQTT code in words
"""

from __future__ import annotations

from collections.abc import Sequence

EX_CONFIG = 78
"""sysexits.h EX_CONFIG: bad configuration; the unit's RestartPreventExitStatus names it."""


class EdgeAgentError(Exception):
    """Base of every error edge-agent raises on purpose."""


class ConfigError(EdgeAgentError):
    """The configuration is invalid; the message names the file, the key and what was expected.

    ``errors`` holds every problem found, one line each (the message is them joined).
    """

    def __init__(self, message: str, errors: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.errors: list[str] = list(errors) or [message]


class DeviceError(EdgeAgentError):
    """A device could not be used."""


class DeviceNotFoundError(DeviceError):
    """The port or device is absent (unplugged, wrong path)."""


class DeviceInitError(DeviceError):
    """The device was found but could not be opened or configured."""


class DeviceIOError(DeviceError):
    """The link broke while in use; close and reopen."""


class FrameError(EdgeAgentError):
    """A frame that cannot become a reading. ``reason`` is the reject counter key."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class QueueError(EdgeAgentError):
    """The SQLite queue cannot be opened or written."""


class PublishError(EdgeAgentError):
    """An MQTT operation failed; carries the paho/MQTT code."""

    def __init__(self, rc: int, text: str) -> None:
        super().__init__(f"[code:{rc}] {text}")
        self.rc = rc
