"""The one link every byte-stream device uses (line scanners, tunnel scanners, serial scales).

Port strings::

    /dev/serial/by-id/usb-...-if00        a device node (udev names; /dev/ttyUSBn is refused)
    socket://<host>:<port>                we connect to the device (its TCP server, a gateway)
    listen://<addr>:<port>?allow=<ip>,..  the device connects to us (drivers/common/tcp.py)
    loop://, spy://..., rfc2217://...     any other pyserial URL, through serial_for_url

Device nodes are opened with ``termios`` (:mod:`drivers.common.tty`) and TCP with our own
sockets (:mod:`drivers.common.tcp`), so ``keep_input`` (a reopen keeps the results a scanner
sent meanwhile) holds there without touching pyserial's internals. Other pyserial URLs are
opened through its public API and flush pending input on open, as pyserial does; they are for
tests and a technician's traces.

Errors are translated here, once, into words (:func:`~edge_agent.errors.in_words`: "not
present", "connection refused", "timed out"): an absent port or peer is DeviceNotFoundError
(the supervisor retries with backoff), a refused one DeviceInitError (a port held by another
program, which ``exclusive = true`` detects with flock, says so), a link that breaks in use
DeviceIOError (close and reopen).
"""

from __future__ import annotations

import errno
import termios
from typing import Any, Literal, Protocol

import serial
import structlog
from pydantic import Field, field_validator

from drivers.common.tcp import ListenTransport, TcpTransport, allow_list, release_listener
from drivers.common.tty import TtyTransport
from edge_agent.errors import DeviceInitError, DeviceIOError, DeviceNotFoundError, in_words
from edge_agent.model import DeviceConfig

Baud = Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400]
_ABSENT = (errno.ENOENT, errno.ENODEV, errno.ENXIO)
#: flock(LOCK_EX | LOCK_NB) refused (exclusive=True) or TIOCEXCL set by another process.
_HELD = (errno.EAGAIN, errno.EWOULDBLOCK, errno.EBUSY)
#: Words that mean "the device is not there (yet)": retried, not a configuration problem.
_ABSENT_WORDS = ("not present", "connection refused", "no route to host", "timed out",
                 "network unreachable", "no device connected", "unknown host name")  # fmt: skip
_FAILURES = (OSError, serial.SerialException, ValueError, termios.error)
#: Longest wait of a pyserial URL's read, seconds: it has no fd to wait on beside a wake fd,
#: so a stop() or a device action is noticed within this (``loop://`` is for tests).
URL_POLL_S = 0.25


def stable_name_problem(port: str) -> str | None:
    """Why ``port`` is not a stable name (a kernel name like /dev/ttyUSB0), or None."""
    if port.rstrip("0123456789") in ("/dev/ttyUSB", "/dev/ttyACM"):
        return (
            "a stable name: /dev/serial/by-id/... or a udev symlink "
            f"(kernel names like {port} change on replug)"
        )
    return None


class LinkConfig(DeviceConfig):
    """Where a byte-stream device is, and its line settings (ignored on TCP)."""

    port: str = Field(min_length=1)
    baudrate: Baud = 9600
    bytesize: Literal[7, 8] = 8
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    exclusive: bool = True

    @field_validator("port")
    @classmethod
    def _stable_name(cls, v: str) -> str:
        problem = stable_name_problem(v)
        if problem is not None:
            raise ValueError(problem)
        if v.startswith("listen://"):
            allow_list(v)  # raises ValueError: a bad address or option
        return v


class Transport(Protocol):
    """What :class:`Link` needs of a transport."""

    generation: int

    def fileno(self) -> int: ...
    def read(self, timeout: float, wake: int = -1) -> bytes: ...
    def write(self, data: bytes, timeout: float) -> None: ...
    def close(self) -> None: ...


class UrlTransport:
    """Any other pyserial URL (``loop://``, ``spy://``, ``rfc2217://``), via its public API."""

    generation = 0

    def __init__(self, cfg: LinkConfig, keep_input: bool) -> None:
        del keep_input  # pyserial's open() flushes; these URLs are for tests and traces
        self.port: Any = serial.serial_for_url(
            cfg.port, baudrate=cfg.baudrate, bytesize=cfg.bytesize, parity=cfg.parity,
            stopbits=cfg.stopbits, timeout=0,
        )  # fmt: skip

    def fileno(self) -> int:
        """No fd: read by waiting in :meth:`read`."""
        return -1

    def read(self, timeout: float, wake: int = -1) -> bytes:
        """Bytes that arrived, waiting up to ``timeout`` (at most ``URL_POLL_S``) for the first."""
        del wake  # no fd to wait on with it: bounded instead
        self.port.timeout = min(timeout, URL_POLL_S)
        data = bytes(self.port.read(1))
        if data:
            self.port.timeout = 0
            data += bytes(self.port.read(self.port.in_waiting or 0))
        return data

    def write(self, data: bytes, timeout: float) -> None:
        """Send ``data``."""
        self.port.write_timeout = timeout
        self.port.write(data)

    def close(self) -> None:
        """Close the port."""
        self.port.close()


class Link:
    """One open port of a byte-stream device.

    Args:
        cfg: where the device is and its line settings.
        keep_input: keep bytes that arrived before the open (scanners, streaming scales);
            False flushes them (a polled scale's stale replies).
        device: the device id, for log lines.
    """

    #: Seconds a write may block before the link counts as broken.
    WRITE_TIMEOUT_S = 1.0

    def __init__(self, cfg: LinkConfig, keep_input: bool = True, device: str = "") -> None:
        self.cfg = cfg
        self.keep_input = keep_input
        self.device = device
        self._t: Transport | None = None
        #: Foreign peers refused on a ``listen://`` port, over every connection.
        self.refused_before = 0
        self.log = structlog.get_logger("drivers").bind(port=cfg.port)

    @property
    def is_open(self) -> bool:
        """True between a successful ``open()`` and ``close()``."""
        return self._t is not None

    @property
    def refused(self) -> int:
        """Foreign peers refused on a ``listen://`` port."""
        return self.refused_before + getattr(self._t, "refused", 0)

    @property
    def generation(self) -> int:
        """Counts the peers taken on a ``listen://`` port within this open."""
        return self._t.generation if self._t is not None else 0

    def open(self) -> None:
        """Open the port. Raises DeviceNotFoundError (absent) or DeviceInitError."""
        self.close()
        cfg = self.cfg
        try:
            self._t = self._make(cfg)
        except _FAILURES as err:
            raise self._open_error(err) from err

    def _make(self, cfg: LinkConfig) -> Transport:
        if cfg.port.startswith("/"):
            line = (cfg.baudrate, cfg.bytesize, cfg.parity, cfg.stopbits)
            return TtyTransport(cfg.port, line, exclusive=cfg.exclusive, keep_input=self.keep_input)
        if cfg.port.startswith("socket://"):
            return TcpTransport(cfg.port)
        if cfg.port.startswith("listen://"):
            return ListenTransport(cfg.port, self.device)
        return UrlTransport(cfg, self.keep_input)

    def _open_error(self, err: Exception) -> DeviceNotFoundError | DeviceInitError:
        port, code = self.cfg.port, getattr(err, "errno", None)
        words = in_words(err, port)
        if code in _ABSENT or words in _ABSENT_WORDS:
            return DeviceNotFoundError(f"{port}: {words}")
        if code in _HELD:
            words = f"busy: another program holds this port ({err})"
        return DeviceInitError(f"{port}: {words}")

    def close(self) -> None:
        """Close (idempotent; errors of a dead port are only logged)."""
        t, self._t = self._t, None
        if t is not None:
            self.refused_before += getattr(t, "refused", 0)
            try:
                t.close()
            except _FAILURES as err:
                self.log.debug("port_close_failed", error=str(err))

    def retire(self) -> None:
        """Close, and release a ``listen://`` port's listening socket."""
        self.close()
        if self.cfg.port.startswith("listen://"):
            release_listener(self.cfg.port)

    def fileno(self) -> int:
        """The open port's fd (-1: none, e.g. ``loop://``)."""
        return self._need().fileno()

    def read(self, timeout: float, wake: int = -1) -> bytes:
        """What arrived, waiting up to ``timeout`` s for the first byte. Raises DeviceIOError.

        ``wake``: an fd (:class:`~drivers.common.wake.Waker`) that ends the wait early when it
        becomes readable; b"" then. -1: none.
        """
        t = self._need()
        try:
            return t.read(timeout, wake)
        except _FAILURES as err:
            raise self.lost(in_words(err, self.cfg.port)) from err

    def write(self, data: bytes) -> None:
        """Send ``data`` (a poll, a command, a trigger). Raises DeviceIOError."""
        t = self._need()
        try:
            t.write(data, self.WRITE_TIMEOUT_S)
        except _FAILURES as err:
            raise self.lost("write failed:", in_words(err, self.cfg.port)) from err
        self.log.debug("tx", data_hex=data.hex(" "))

    def lost(self, *what: object) -> DeviceIOError:
        """A DeviceIOError naming the port."""
        return DeviceIOError(f"{self.cfg.port}: " + " ".join(map(str, what)))

    def _need(self) -> Transport:
        if self._t is None:
            raise self.lost("not open")
        return self._t
