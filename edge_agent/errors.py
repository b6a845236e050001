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

import errno
import os
import re
import socket
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


#: errno -> what a technician reads (the strerror texts are for programmers).
_ERRNO_WORDS = {
    errno.ENOENT: "not present",
    errno.ENODEV: "not present",
    errno.ENXIO: "not present",
    errno.ECONNREFUSED: "connection refused",
    errno.ETIMEDOUT: "timed out",
    errno.EHOSTUNREACH: "no route to host",
    errno.ENETUNREACH: "network unreachable",
    errno.ECONNRESET: "connection reset by the device",
    errno.EPIPE: "connection closed by the device",
    errno.EACCES: "permission denied (is the service user in the dialout group?)",
    errno.EPERM: "permission denied (is the service user in the dialout group?)",
    errno.EBUSY: "busy: another program holds it",
    errno.EIO: "input/output error (cable pulled?)",
}
_ERRNO_IN_TEXT = re.compile(r"\[Errno (\d+)\]")


def in_words(err: BaseException, path: str | None = None) -> str:
    """Why a port or connection failed, in the words a technician can act on.

    ``path``: the device node the error is about; when it is gone the answer is "not present"
    whatever the error said (an unplugged USB adapter fails its read with EIO or "returned no
    data"). pyserial wraps socket and termios errors without their errno; the errno is looked
    for in the causes and the text too. Unknown errors come back as their own text.
    """
    if path is not None and path.startswith("/") and not os.path.exists(path):
        return "not present"
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, socket.gaierror):
            return "unknown host name"
        if isinstance(seen, TimeoutError | socket.timeout):
            return "timed out"
        words = _ERRNO_WORDS.get(getattr(seen, "errno", None) or -1)
        if words is None:
            m = _ERRNO_IN_TEXT.search(str(seen))
            words = _ERRNO_WORDS.get(int(m.group(1))) if m else None
        if words is not None:
            return words
        seen = seen.__cause__ or seen.__context__
    text = str(err) or type(err).__name__
    if "returned no data" in text:  # pyserial: the fd reads EOF: the adapter is going away
        return "device disconnected"
    if text.endswith(
        "timed out"
    ):  # pyserial's socket:// open: "Could not open port ...: timed out"
        return "timed out"
    return text
