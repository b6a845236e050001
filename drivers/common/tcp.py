"""TCP transports: ``socket://`` (we connect to the device) and ``listen://`` (it connects to us).

``socket://host:port``: a scanner's TCP server or a serial-to-Ethernet gateway. Our own socket,
not pyserial's ``socket://`` (whose ``close()`` leaked the fd when ``shutdown()`` failed and
slept 0.3 s, pyserial/pyserial#555, and whose ``open()`` flushed what had arrived).

``listen://<bind address>:<port>?allow=<ip>,<ip>``: many fixed scanners and DWS controllers
push their telegrams as TCP *clients* to a port on the line PC. The device binds the port and
takes one peer at a time:

* a peer whose address is not in ``allow`` is accepted and closed at once, logged
  (``peer_refused``) and counted in ``refused``; without ``allow`` any peer is taken;
* a new connection from an allowed peer replaces the current one (a device that reconnects
  after a half-open link, a power cut or a cable pull gets heard at once); what the old one
  still had buffered is read first. ``generation`` counts the peers taken, so the reader can
  drop a telegram cut by the switch;
* no peer means the device is not there: opening waits ``ACCEPT_S`` for one, then fails
  (``no device connected``) and the supervisor retries, so the device state is
  ``reconnecting`` until the device connects and ``connected`` while it is.

The listening socket is kept per address while its device is configured (``LISTENERS``): a
device that reconnects while its reader is between two opens waits in the kernel's backlog, with
what it sends, instead of being refused. A reload that removes or changes the device releases it
(:func:`release_listener`, through ``Driver.retire``).
"""

from __future__ import annotations

import ipaddress
import select
import socket
import threading
import time
from urllib.parse import parse_qs, urlsplit

import structlog

READ_CHUNK = 65536
#: Seconds ``socket://`` waits for the TCP handshake.
CONNECT_S = 5.0
#: Seconds a ``listen://`` open waits for a device to connect.
ACCEPT_S = 0.2
#: Listening sockets by (host, port), kept across reopens and devices (module docstring).
LISTENERS: dict[tuple[str, int], socket.socket] = {}
_LISTENERS_LOCK = threading.Lock()


def host_port(url: str) -> tuple[str, int, dict[str, list[str]]]:
    """``scheme://host:port?query`` -> (host, port, query). Raises ValueError."""
    parts = urlsplit(url)
    if not parts.hostname or parts.port is None:
        msg = f"{url}: expected {parts.scheme}://<host>:<port>"
        raise ValueError(msg)
    return parts.hostname, parts.port, parse_qs(parts.query)


def allow_list(url: str) -> frozenset[str] | None:
    """The ``allow`` addresses of a ``listen://`` URL (None: any peer). Raises ValueError."""
    _host, _port, query = host_port(url)
    unknown = set(query) - {"allow"}
    if unknown:
        msg = f"{url}: unknown option {sorted(unknown)[0]!r} (only allow=<ip>,<ip>)"
        raise ValueError(msg)
    if "allow" not in query:
        return None
    ips = [ip.strip() for v in query["allow"] for ip in v.split(",") if ip.strip()]
    return frozenset(str(ipaddress.ip_address(ip)) for ip in ips)


def _tune(sock: socket.socket) -> socket.socket:
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    return sock


def _recv(sock: socket.socket, timeout: float, wake: int = -1) -> bytes:
    """What arrived within ``timeout`` s; b"" on a timeout or when ``wake`` became readable."""
    fds: list[socket.socket | int] = [sock, wake] if wake >= 0 else [sock]
    if timeout > 0 and sock not in select.select(fds, [], [], timeout)[0]:
        return b""
    try:
        data = sock.recv(READ_CHUNK)
    except BlockingIOError:
        return b""
    if not data:
        msg = "connection closed by the device"
        raise ConnectionError(msg)
    return data


def _leftover(sock: socket.socket) -> bytes:
    """What a peer being replaced still has buffered (up to 1 MiB), without waiting."""
    out = b""
    for _ in range(16):
        try:
            data = sock.recv(READ_CHUNK)
        except OSError:
            break
        if not data:
            break
        out += data
    return out


def _send(sock: socket.socket, data: bytes, timeout: float) -> None:
    view, deadline = memoryview(data), time.monotonic() + timeout
    while view:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([], [sock], [], left)[1]:
            msg = "write timed out"
            raise TimeoutError(msg)
        view = view[sock.send(view) :]


class TcpTransport:
    """A connection to ``socket://host:port``. Raises OSError when it cannot be made."""

    generation = 0

    def __init__(self, url: str) -> None:
        host, port, _ = host_port(url)
        self.sock = _tune(socket.create_connection((host, port), timeout=CONNECT_S))

    def fileno(self) -> int:
        """The socket's fd, for a selector."""
        return self.sock.fileno()

    def read(self, timeout: float, wake: int = -1) -> bytes:
        """What has arrived, waiting up to ``timeout`` s (or ``wake``); b"" if nothing.

        Raises OSError.
        """
        return _recv(self.sock, timeout, wake)

    def write(self, data: bytes, timeout: float) -> None:
        """Send all of ``data`` within ``timeout`` s. Raises OSError / TimeoutError."""
        _send(self.sock, data, timeout)

    def close(self) -> None:
        """Close the socket (no shutdown dance: a reset link must not leak the fd)."""
        self.sock.close()


def listener(host: str, port: int) -> socket.socket:
    """The listening socket for (host, port), bound on first use. Raises OSError."""
    with _LISTENERS_LOCK:
        sock = LISTENERS.get((host, port))
        if sock is None:
            sock = socket.create_server((host, port), backlog=8, reuse_port=False)
            sock.setblocking(False)
            LISTENERS[(host, port)] = sock
        return sock


def release_listener(url: str) -> None:
    """Close and forget the listening socket of ``listen://`` ``url`` (its device was removed
    by a reload; a device added later on that address binds it again)."""
    host, port, _ = host_port(url)
    with _LISTENERS_LOCK:
        sock = LISTENERS.pop((host, port), None)
    if sock is not None:
        sock.close()


class ListenTransport:
    """One device's peer on a ``listen://`` port (see the module docstring).

    Raises:
        OSError: the port cannot be bound; ``ConnectionError`` when no device connected.
    """

    def __init__(self, url: str, device: str) -> None:
        host, port, _ = host_port(url)
        self.url, self.allow = url, allow_list(url)
        self.server = listener(host, port)
        self.log = structlog.get_logger("drivers").bind(device=device, port=url)
        self.refused = 0
        self.generation = 0
        self.peer: socket.socket | None = None
        #: What a replaced peer still had buffered, read before the new peer's bytes.
        self._rest = b""
        if not self._accept(ACCEPT_S) and self.peer is None:
            msg = "no device connected"
            raise ConnectionError(msg)

    def _accept(self, timeout: float) -> bool:
        """Take pending connections (the newest allowed one wins); True if a peer was taken."""
        took = False
        while select.select([self.server], [], [], timeout)[0]:
            timeout = 0
            try:
                sock, addr = self.server.accept()
            except BlockingIOError:
                break
            ip = str(ipaddress.ip_address(addr[0].removeprefix("::ffff:")))
            if self.allow is not None and ip not in self.allow:
                sock.close()
                self.refused += 1
                self.log.warning("peer_refused", peer=f"{ip}:{addr[1]}", refused=self.refused)
                continue
            self.log.info("peer_connected", peer=f"{ip}:{addr[1]}", replaces=self.peer is not None)
            if self.peer is not None:
                self._rest += _leftover(self.peer)
                self.peer.close()
            self.peer, took = _tune(sock), True
            self.generation += 1
        return took

    def fileno(self) -> int:
        """The peer's fd (the listener is watched by :meth:`read`)."""
        return self.peer.fileno() if self.peer is not None else -1

    def read(self, timeout: float, wake: int = -1) -> bytes:
        """The peer's bytes; a new allowed peer replaces it (the old one's buffer read first).

        Waits up to ``timeout`` s, less if ``wake`` becomes readable (b"" then).
        """
        if self.peer is None:
            msg = "no device connected"
            raise ConnectionError(msg)
        fds: list[socket.socket | int] = [self.peer, self.server]
        ready = select.select([*fds, wake] if wake >= 0 else fds, [], [], max(timeout, 0))[0]
        if self.server in ready and self._accept(0):
            rest, self._rest = self._rest, b""
            return rest
        return _recv(self.peer, 0) if self.peer in ready else b""

    def write(self, data: bytes, timeout: float) -> None:
        """Send to the peer (a trigger). Raises OSError / TimeoutError."""
        if self.peer is None:
            msg = "no device connected"
            raise ConnectionError(msg)
        _send(self.peer, data, timeout)

    def close(self) -> None:
        """Drop the peer; the listening socket stays (module docstring)."""
        peer, self.peer = self.peer, None
        if peer is not None:
            peer.close()
