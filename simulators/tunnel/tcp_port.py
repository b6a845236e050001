"""A device's TCP server port on 127.0.0.1: one host connection at a time, unpluggable.

It has the same interface as :class:`simulators.pty_port.PtyPort` (``plug``, ``unplug``,
``write``, ``read``, ``close``, ``url``), so a simulator can serve either one. A scanner's
Ethernet port accepts a host connection. Here the newest connection wins, because a host that
reconnects after a half-open link must get the data, not the dead socket. ``unplug()`` resets
the connection (RST, as a power cut or pulled cable looks to the host) and closes the listener,
so reconnects are refused until ``plug()``. ``drop()`` closes only the host connection.
"""

from __future__ import annotations

import select
import socket
import struct
import threading
from collections.abc import Callable


def send_some(sock: socket.socket, data: bytes, drop: Callable[..., None]) -> int:
    """Send what fits without blocking; a broken link is dropped (no RST) and counts 0."""
    try:
        return sock.send(data)
    except BlockingIOError:
        return 0
    except OSError:
        drop(rst=False)
        return 0


def recv_some(sock: socket.socket, drop: Callable[..., None]) -> bytes:
    """What the host sent (commands), non-blocking; b"" if none; a closed link is dropped."""
    try:
        data = sock.recv(4096)
    except BlockingIOError:
        return b""
    except OSError:
        data = b""
    if not data:
        drop(rst=False)
    return data


class TcpPort:
    """One simulated TCP device port.

    Args:
        port: TCP port to listen on; 0 picks a free one at the first ``plug()`` and keeps it.
        host: address to bind (loopback by default).
    """

    def __init__(self, port: int = 0, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port
        self.plugs = 0
        self.accepts = 0
        self._listener: socket.socket | None = None
        self._client: socket.socket | None = None
        self._lock = threading.RLock()

    @property
    def url(self) -> str:
        """What a driver opens: ``socket://host:port``."""
        return f"socket://{self.host}:{self.port}"

    @property
    def connected(self) -> bool:
        """True while a host connection is up (accepting a pending one first)."""
        with self._lock:
            self._accept()
            return self._client is not None

    def plug(self) -> str:
        """Listen (again) on the port; returns the URL."""
        with self._lock:
            if self._listener is None:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((self.host, self.port))
                s.listen(8)
                s.setblocking(False)
                self.port = s.getsockname()[1]
                self._listener = s
                self.plugs += 1
            return self.url

    def unplug(self) -> None:
        """Reset the host connection and stop listening (the device is gone)."""
        with self._lock:
            self.drop(rst=True)
            if self._listener is not None:
                self._listener.close()
                self._listener = None

    def drop(self, *, rst: bool = True) -> None:
        """Close the host connection: RST (reset) or FIN (orderly close)."""
        with self._lock:
            c, self._client = self._client, None
            if c is not None:
                if rst:
                    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                c.close()

    def write(self, data: bytes) -> int:
        """Send what fits; returns bytes sent (0 when no host is connected or it went away)."""
        with self._lock:
            self._accept()
            c = self._client
            if c is None or self._peer_closed(c):
                self.drop(rst=False)
                return 0
            return send_some(c, data, self.drop)

    def read(self) -> bytes:
        """Bytes the host sent (commands), non-blocking; b"" if none."""
        with self._lock:
            self._accept()
            c = self._client
            return b"" if c is None else recv_some(c, self.drop)

    def close(self) -> None:
        """Unplug for good."""
        self.unplug()

    def _accept(self) -> None:
        while self._listener is not None:
            try:
                c, _ = self._listener.accept()
            except BlockingIOError:
                return
            c.setblocking(False)
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.drop(rst=False)
            self._client = c
            self.accepts += 1

    @staticmethod
    def _peer_closed(c: socket.socket) -> bool:
        readable, _, _ = select.select([c], [], [], 0)
        if not readable:
            return False
        try:
            return c.recv(1, socket.MSG_PEEK) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True
