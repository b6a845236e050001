"""The shared base of the fixed tunnel scanner drivers: SICK CLV/Lector, Cognex DataMan, Datalogic.

It lives in the ``sick_clv`` package only because of file ownership. It should move to
``drivers/tunnel.py``, with :mod:`.tunnel_config` (settings and field checks), as a pure move.
The three drivers share four things:

* **the transport**: a pyserial URL opened with ``serial_for_url``. The URL forms are::

      socket://<host>:<port>            the scanner's TCP port (SICK 2111/2112, DataMan 23 ...)
      /dev/serial/by-id/usb-..._if00    RS-232/422 behind a USB adapter, or a simulator's pty
      spy://<url>?file=/tmp/trace.txt   hex trace for a technician
      loop://                           loopback, for tests

* **the read loop**: read what has arrived, feed the framer, and route each frame (answers and
  heartbeats are handled here, results become readings). Watchdogs (:meth:`_idle`) run only
  after an empty read, because closing the link would drop bytes not yet read;
* **outgoing commands**: software triggers, sent by :meth:`TunnelDriver._tick` from the read
  thread, so one thread owns the port;
* **one telegram, several readings**: a tunnel scanner reports every code of a reading gate in
  one telegram; ``decode`` returns them all, each with the whole telegram as ``raw`` and the
  same ``gate``. Answers and heartbeats are counted by ``decode`` and give no reading.

Duplicates: a telegram that carries a gate or trigger counter and is byte-identical to one of the
last ``dedup_window`` such telegrams is dropped as the reject ``duplicate``. This is a device
repeating its output (docs/protocols.md §0.3). Without a counter, two identical telegrams can be two
parcels, so both are published.
"""

from __future__ import annotations

import abc
import errno
import time
from collections import Counter, deque
from collections.abc import Sequence
from typing import Any, ClassVar, TypeVar

import serial

from drivers.base import Driver
from drivers.common.framing import Event, Framer, Reject
from drivers.tunnel.config import TunnelConfig
from edge_agent.errors import (
    DeviceInitError,
    DeviceIOError,
    DeviceNotFoundError,
    FrameError,
    in_words,
)
from edge_agent.reading import Decoded

_ABSENT = (errno.ENOENT, errno.ENODEV, errno.ENXIO)
_ABSENT_TEXT = ("No such file", "Connection refused", "No route to host", "timed out")


TC = TypeVar("TC", bound=TunnelConfig)


class TunnelDriver(Driver[TC]):
    """A fixed scanner on a pyserial URL: framer, router and parser supplied by the subclass.

    Args:
        device_id: the config id (``[devices.<id>]``).
        cfg: the driver's validated config.
    """

    #: Longest single wait in the port's read(), seconds: bounds stop latency and trigger jitter.
    POLL_S: ClassVar[float] = 0.05
    #: Seconds a command write may block before the link counts as broken.
    WRITE_TIMEOUT_S: ClassVar[float] = 1.0

    def __init__(self, device_id: str, cfg: TC) -> None:
        super().__init__(device_id, cfg)
        self._port: Any = None
        self._socket = cfg.port.startswith("socket://")
        self._framer = self.make_framer()
        self._recent: deque[bytes] = deque(maxlen=cfg.dedup_window)
        #: Command answers and device messages that are not readings, by kind.
        self.answers: Counter[str] = Counter()
        #: Monotonic time bytes last arrived (set on open).
        self.last_rx = 0.0

    @abc.abstractmethod
    def make_framer(self) -> Framer:
        """A fresh framer for this device's telegrams."""

    def open(self) -> None:
        """Open the port URL. Raises DeviceNotFoundError (absent, refused) or DeviceInitError."""
        self.close()
        cfg = self.cfg
        try:
            port = serial.serial_for_url(
                cfg.port, do_not_open=True, baudrate=cfg.baudrate, bytesize=cfg.bytesize,
                parity=cfg.parity, stopbits=cfg.stopbits, timeout=self.POLL_S,
                write_timeout=self.WRITE_TIMEOUT_S,
                exclusive=cfg.exclusive if cfg.port.startswith("/") else None,
            )  # fmt: skip
            # pyserial's open() flushes pending input. On a scanner those bytes are results that
            # arrived while we were reconnecting, so keep them (posix: _reset_input_buffer,
            # socket://: reset_input_buffer).
            port._reset_input_buffer = port.reset_input_buffer = lambda: None
            port.open()
        except (serial.SerialException, OSError, ValueError) as err:
            raise self._open_error(err) from err
        self._port = port
        self._framer = self.make_framer()
        self.last_rx = time.monotonic()
        self._on_open()
        self.log.info("port_opened", port=cfg.port)

    def _open_error(self, err: Exception) -> Exception:
        text = f"{self.cfg.port}: {in_words(err, self.cfg.port)}"
        if getattr(err, "errno", None) in _ABSENT or any(s in str(err) for s in _ABSENT_TEXT):
            return DeviceNotFoundError(text)
        return DeviceInitError(text)

    def close(self) -> None:
        """Close the port (idempotent). A telegram cut by the close is dropped with the framer."""
        port, self._port = self._port, None
        self._pending.clear()
        if port is None:
            return
        try:
            sock = getattr(port, "_socket", None) if self._socket else None
            if sock is None:
                port.close()
                return
            # pyserial 3.5 socket:// close() skips socket.close() when shutdown() fails (a link
            # the peer reset), leaking the fd, then sleeps 0.3 s (pyserial/pyserial#555).
            sock.close()
            port._socket = None
            port.is_open = False
        except (serial.SerialException, OSError) as err:
            self.log.debug("port_close_failed", error=str(err))

    def write(self, data: bytes) -> None:
        """Send a command to the device. Raises DeviceIOError."""
        if self._port is None:
            msg = f"{self.cfg.port}: not open"
            raise DeviceIOError(msg)
        try:
            self._port.write(data)
        except (serial.SerialException, OSError) as err:
            msg = f"{self.cfg.port}: write failed: {in_words(err, self.cfg.port)}"
            raise DeviceIOError(msg) from err
        self.log.debug("command_sent", data_hex=data.hex(" "))

    def _on_open(self) -> None:
        """Reset per-connection state (trigger schedules); called after every open."""

    def _tick(self, now: float) -> None:
        """Periodic work before each read (triggers). Raises DeviceIOError."""
        del now

    def _idle(self, now: float) -> None:
        """Called after a read that returned nothing (watchdogs). Raises DeviceIOError."""
        del now

    def _admit(self, frame: bytes, readings: Sequence[Decoded]) -> Sequence[Decoded]:
        """Drop a telegram with a gate counter that repeats one of the last ``dedup_window``."""
        if readings and readings[0].gate is not None and self.cfg.dedup_window:
            if frame in self._recent:
                raise FrameError("duplicate", "same bytes as a recent telegram")
            self._recent.append(frame)
        return readings

    def _read_events(self, timeout: float) -> Sequence[Event | Decoded]:
        del timeout  # the port's own timeout (POLL_S) bounds the wait
        self._tick(time.monotonic())
        data = self._read_some()
        now = time.monotonic()
        if not data:
            self._idle(now)  # only after an empty read: closing would drop unread bytes
        return self._framer.feed(data, now) if data else self._framer.expire(now)

    def _read_some(self) -> bytes:
        port = self._port
        if port is None:
            msg = f"{self.cfg.port}: not open"
            raise DeviceIOError(msg)
        try:
            data: bytes = port.read(1)
            if data:
                data += self._drain(port)
        except (serial.SerialException, OSError) as err:
            msg = f"{self.cfg.port}: {in_words(err, self.cfg.port)}"
            raise DeviceIOError(msg) from err
        if data:
            self.last_rx = time.monotonic()
            self.log.debug("rx", data_hex=data.hex(" "))
        return data

    def _drain(self, port: Any) -> bytes:
        if self._socket:
            # socket:// in_waiting is only 0 or 1; a zero timeout reads what is there at once
            port.timeout = 0
            try:
                return bytes(port.read(4 * self.cfg.max_frame))
            finally:
                port.timeout = self.POLL_S
        waiting = port.in_waiting
        return bytes(port.read(waiting)) if waiting else b""

    def replay(self, data: bytes, *, bytewise: bool = False) -> list[Decoded | Reject]:
        """Run recorded bytes through framer and decoder, without a port (unscreened).

        For captures and a technician's ``spy://`` traces. Rejects come back as :class:`Reject`
        (and are counted as on a live port); answers and heartbeats update their counters.
        """
        framer, out = self.make_framer(), list[Decoded | Reject]()
        chunks = [data[i : i + 1] for i in range(len(data))] if bytewise else [data]
        events: list[Event] = []
        for chunk in chunks:
            events += framer.feed(chunk, 0.0)
        events += framer.expire(1e9)
        for ev in events:
            if isinstance(ev, Reject):
                self._reject(ev.reason, ev.data)
                out.append(ev)
                continue
            try:
                out.extend(self._admit(ev, self.decode(ev)))
            except FrameError as err:
                self._reject(err.reason, ev, err.detail)
                out.append(Reject(err.reason, ev))
        return out
