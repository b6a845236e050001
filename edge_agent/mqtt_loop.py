"""paho driven from our own ``selectors`` loop: one thread does connect, TLS, writes and reads.

paho 2.x's external-loop API only (``socket()``, ``want_write()``, ``loop_read()``,
``loop_write()``, ``loop_misc()``, ``reconnect()``, ``on_socket_register_write``); no private
attribute of the client is touched. Because a ``socket_register_write`` callback is set, paho
never writes from inside ``publish()``: every write happens here, in :meth:`NetLoop.turn`, so
several publishes of one turn leave in one ``loop_write()``.

A fresh TLS connection is read before it is written (``READ_FIRST_S``): with TLS 1.3 the broker
checks our certificate after our side of the handshake is done, and answers a bad one (expired,
unknown CA) with an alert and a close. Written at once, the CONNECT can reach the broker before
that close, which then resets the connection and the alert is lost ("EOF occurred in violation
of protocol" instead of "certificate expired"). The broker's first bytes (its session tickets,
or the alert) come within a round trip, so the wait costs nothing on a good connection.

Other threads wake the loop through an eventfd (:meth:`NetLoop.signal`), at most once per turn.
"""

from __future__ import annotations

import os
import selectors
import ssl
import threading
import time
from typing import Any

from edge_agent.mqtt_client import _Client

#: Longest wait for the broker's first bytes before a fresh connection is written (s).
READ_FIRST_S = 0.2


class NetLoop:
    """The selector over paho's socket and the wake fd.

    Args:
        client: the paho client; only the thread calling :meth:`turn` may use it.
    """

    def __init__(self, client: _Client) -> None:
        self.client = client
        client.on_socket_register_write = lambda *_a: None  # we write (see module doc)
        client.on_socket_unregister_write = lambda *_a: None
        self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._woken = threading.Event()  # set: a wake is signalled and not yet taken
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._wake_fd, selectors.EVENT_READ)
        self._sock: Any = None
        self._hold_write_until = 0.0

    def signal(self) -> None:
        """Wake the loop (any thread); a no-op while a wake is already pending."""
        if not self._woken.is_set():
            self._woken.set()
            os.eventfd_write(self._wake_fd, 1)

    def close(self) -> None:
        """Close the selector (the wake fd stays open: other threads may still signal it)."""
        self._sel.close()

    def connected_socket(self) -> bool:
        """paho has a socket (connecting or connected)."""
        return self.client.socket() is not None

    def attempt(self) -> bool:
        """One blocking connection attempt (TCP, TLS handshake, CONNECT queued); True when a
        socket is open. Raises what ``reconnect()`` raises (OSError)."""
        self.client.reconnect()
        if isinstance(self.client.socket(), ssl.SSLSocket):
            self._hold_write_until = time.monotonic() + READ_FIRST_S
        return self.connected_socket()

    def turn(self, deadline: float) -> None:
        """Wait until ``deadline`` (``time.monotonic()``) for the socket or a wake; read,
        write, and let paho check its keepalive. paho's callbacks run in here."""
        c = self.client
        now = time.monotonic()
        holding = now < self._hold_write_until
        self._watch(c.socket(), c.want_write() and not holding)
        if holding:
            deadline = min(deadline, self._hold_write_until)
        for key, events in self._sel.select(max(0.0, deadline - now)):
            if key.fd == self._wake_fd:
                # read, then clear: cleared first, a signal landing in between would set the
                # flag and write the fd, the read would swallow that write, and the flag would
                # stay set, turning every later signal into a no-op (the loop then woke only on
                # its keepalive timer: readings 3.75 s late)
                os.eventfd_read(self._wake_fd)
                self._woken.clear()
                continue
            if events & selectors.EVENT_READ:
                self._hold_write_until = 0.0
                c.loop_read()
                while getattr(c.socket(), "pending", lambda: 0)():  # TLS bytes already read
                    c.loop_read()
            if events & selectors.EVENT_WRITE and c.socket() is not None:
                c.loop_write()
        if c.socket() is not None:
            c.loop_misc()

    def flush(self) -> None:
        """Write what paho has queued (publishes of this turn), unless a fresh TLS connection
        waits for its first read."""
        c = self.client
        if c.want_write() and time.monotonic() >= self._hold_write_until:
            c.loop_write()

    def _watch(self, sock: Any, write: bool) -> None:
        self._sock = watch(self._sel, self._sock, sock, write)


def watch(sel: selectors.BaseSelector, old: Any, sock: Any, write: bool) -> Any:
    """Keep paho's current socket ``sock`` (None: none) registered in ``sel`` in place of
    ``old``, for writing too while bytes wait; returns it (the next call's ``old``)."""
    events = selectors.EVENT_READ | (selectors.EVENT_WRITE if write else 0)
    if sock is not old:
        if old is not None:
            sel.unregister(old)
        if sock is not None:
            sel.register(sock, events)
    elif sock is not None and sel.get_key(sock).events != events:
        sel.modify(sock, events)
    return sock
