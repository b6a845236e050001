"""A device that pushes its telegrams as a TCP *client* to the host's ``listen://`` port.

Same interface as :class:`~simulators.tunnel.tcp_port.TcpPort` (``plug``, ``unplug``, ``drop``,
``write``, ``read``, ``close``, ``url``), so every tunnel simulator can run in client mode, the
way fixed scanners and DWS controllers configured with a "host IP and port" do. ``plug()`` lets
it connect (it reconnects by itself on the next write, as such devices do); ``unplug()`` resets
the connection and stays away until ``plug()``; ``reconnect()`` opens a new connection while the
old one is left open and unused (a half-open link the device gave up on).
"""

from __future__ import annotations

import socket
import struct
import threading

from simulators.tunnel.tcp_port import recv_some, send_some


class TcpClientPort:
    """One simulated device connecting to ``host:port``.

    Args:
        port: the host's listening port.
        host: the host's address.
        source: the address the device connects from (another 127.x.y.z on loopback plays a
            different device on the line).
    """

    def __init__(self, port: int, host: str = "127.0.0.1", source: str = "127.0.0.1") -> None:
        self.host, self.port, self.source = host, port, source
        self.plugs = 0
        self.connects = 0
        self._plugged = False
        self._sock: socket.socket | None = None
        self._abandoned: list[socket.socket] = []
        self._lock = threading.RLock()

    @property
    def url(self) -> str:
        """What the driver opens: ``listen://host:port?allow=<source>``."""
        return f"listen://{self.host}:{self.port}?allow={self.source}"

    @property
    def connected(self) -> bool:
        """True while a connection is up."""
        return self._sock is not None

    def plug(self) -> str:
        """Let the device connect (now if the host listens, else on the next write)."""
        with self._lock:
            if not self._plugged:
                self._plugged = True
                self.plugs += 1
            self._connect()
            return self.url

    def unplug(self) -> None:
        """Reset the connection (a power cut); no reconnect until ``plug()``."""
        with self._lock:
            self._plugged = False
            self.drop(rst=True)

    def drop(self, *, rst: bool = True) -> None:
        """Close the connection: RST or FIN; the next write reconnects if plugged."""
        with self._lock:
            s, self._sock = self._sock, None
            if s is not None:
                if rst:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.close()

    def reconnect(self) -> bool:
        """Open a new connection, leaving the old one open and silent (half-open)."""
        with self._lock:
            if self._sock is not None:
                self._abandoned.append(self._sock)
                self._sock = None
            return self._connect()

    def _connect(self) -> bool:
        if self._sock is not None or not self._plugged:
            return self._sock is not None
        try:
            s = socket.create_connection(
                (self.host, self.port), timeout=0.5, source_address=(self.source, 0)
            )
        except OSError:
            return False
        s.setblocking(False)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = s
        self.connects += 1
        return True

    def write(self, data: bytes) -> int:
        """Send what fits; 0 when not connected (and the host refused a new connection)."""
        with self._lock:
            if not self._connect():
                return 0
            assert self._sock is not None
            return send_some(self._sock, data, self.drop)

    def read(self) -> bytes:
        """Bytes the host sent (commands), non-blocking; b"" if none."""
        with self._lock:
            s = self._sock
            return b"" if s is None else recv_some(s, self.drop)

    def close(self) -> None:
        """Unplug for good (abandoned connections included)."""
        with self._lock:
            self.unplug()
            for s in self._abandoned:
                s.close()
            self._abandoned.clear()
