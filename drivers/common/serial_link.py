"""The serial link every serial driver shares: its config fields and one open/read/write/close.

Port strings are pyserial URLs, opened with ``serial_for_url(..., do_not_open=True)`` then
``open()``::

    /dev/serial/by-id/usb-...-if00     a device node (udev names; /dev/ttyUSBn is refused)
    socket://<host>:<port>             a serial-to-Ethernet gateway or a TCP device
    loop://                            loopback, for tests
    spy:///dev/...?file=/tmp/trace     hex trace of everything on the wire
    hwgrep://<regexp>                  first port whose description matches

pyserial errors are translated here, once, into words (:func:`~edge_agent.errors.in_words`:
"not present", "connection refused", "timed out"): an absent port is DeviceNotFoundError (the
supervisor retries with backoff), a refused one DeviceInitError (one held by another program,
which ``exclusive = true`` detects with flock, says so), a link that breaks in use DeviceIOError
(close and reopen).
"""

from __future__ import annotations

import errno
import termios
from typing import Any, Literal

import serial
import structlog
from pydantic import Field, field_validator

from edge_agent.errors import DeviceInitError, DeviceIOError, DeviceNotFoundError, in_words
from edge_agent.model import DeviceConfig

Baud = Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400]
_ABSENT = (errno.ENOENT, errno.ENODEV, errno.ENXIO)
#: flock(LOCK_EX | LOCK_NB) refused (exclusive=True) or TIOCEXCL set by another process.
_HELD = (errno.EAGAIN, errno.EWOULDBLOCK, errno.EBUSY)


class SerialPortConfig(DeviceConfig):
    """The port settings of a serial device (mixed into each serial driver's Config)."""

    port: str = Field(min_length=1)
    baudrate: Baud = 9600
    bytesize: Literal[7, 8] = 8
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    exclusive: bool = True

    @field_validator("port")
    @classmethod
    def _stable_name(cls, v: str) -> str:
        if v.rstrip("0123456789") in ("/dev/ttyUSB", "/dev/ttyACM"):
            msg = (
                "a stable name: /dev/serial/by-id/... or a udev symlink "
                f"(kernel names like {v} change on replug)"
            )
            raise ValueError(msg)
        return v


class SerialLink:
    """One open pyserial port.

    Args:
        cfg: the port settings.
        timeout: longest wait of one ``read()``, seconds.
        keep_input: do not flush the kernel input buffer on open (bytes that arrived while we
            were reconnecting are readings, for a scanner or a streaming scale).
    """

    def __init__(self, cfg: SerialPortConfig, timeout: float, keep_input: bool = True) -> None:
        self.cfg = cfg
        self.timeout = timeout
        self.keep_input = keep_input
        self._port: Any = None
        self.log = structlog.get_logger("drivers").bind(port=cfg.port)

    @property
    def is_open(self) -> bool:
        """True between a successful ``open()`` and ``close()``."""
        return self._port is not None

    def open(self) -> None:
        """Open the URL. Raises DeviceNotFoundError (absent) or DeviceInitError."""
        self.close()
        cfg = self.cfg
        try:
            port = serial.serial_for_url(
                cfg.port, do_not_open=True, baudrate=cfg.baudrate, bytesize=cfg.bytesize,
                parity=cfg.parity, stopbits=cfg.stopbits, timeout=self.timeout,
                exclusive=cfg.exclusive if cfg.port.startswith("/") else None,
            )  # fmt: skip
            if self.keep_input:
                port._reset_input_buffer = lambda: None  # pyserial flushes on open otherwise
            port.open()
        except (serial.SerialException, OSError, ValueError, termios.error) as err:
            words = in_words(err, cfg.port)
            if getattr(err, "errno", None) in _ABSENT or words == "not present":
                msg = f"{cfg.port}: not present"
                raise DeviceNotFoundError(msg) from err
            if getattr(err, "errno", None) in _HELD:
                words = f"busy: another program holds this port ({err})"
            msg = f"{cfg.port}: {words}"
            raise DeviceInitError(msg) from err
        self._port = port

    def close(self) -> None:
        """Close (idempotent; errors of a dead port are only logged)."""
        port, self._port = self._port, None
        if port is not None:
            try:
                port.close()
            except (serial.SerialException, OSError) as err:
                self.log.debug("port_close_failed", error=str(err))

    def read(self) -> bytes:
        """What has arrived, waiting up to ``timeout`` for the first byte. Raises DeviceIOError."""
        port = self._need()
        try:
            return bytes(port.read(max(1, port.in_waiting)))
        except (serial.SerialException, OSError) as err:
            raise self.lost(in_words(err, self.cfg.port)) from err

    def write(self, data: bytes) -> None:
        """Send ``data`` (a poll, a command). Raises DeviceIOError."""
        port = self._need()
        try:
            port.write(data)
        except (serial.SerialException, OSError) as err:
            raise self.lost(in_words(err, self.cfg.port)) from err

    def lost(self, *what: object) -> DeviceIOError:
        """A DeviceIOError naming the port."""
        return DeviceIOError(f"{self.cfg.port}: " + " ".join(map(str, what)))

    def _need(self) -> Any:
        if self._port is None:
            raise self.lost("not open")
        return self._port
