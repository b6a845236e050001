"""The pyserial internals edge-agent's serial code leans on, pinned.

Two workarounds touch pyserial below its public API (drivers/common/serial_link.py,
drivers/tunnel/base.py):

* ``_reset_input_buffer`` (posix) / ``reset_input_buffer`` (``socket://``) are replaced before
  ``open()`` so that a reopen keeps the results a scanner sent while we reconnected. If pyserial
  stopped calling them from ``open()``, the patch would be dead code; if it called something
  else, input would be flushed again: either way these tests fail, on real ptys and sockets.
* ``_socket`` of a ``socket://`` port is closed by us (pyserial/pyserial#555 leaks it).
"""

from __future__ import annotations

import os
import pty
import socket
import time
import tty

import serial


def test_posix_open_flushes_through_reset_input_buffer_and_the_patch_keeps_input() -> None:
    master, slave = pty.openpty()
    path = os.ttyname(slave)
    tty.setraw(slave)  # as a scanner's port is: no CR -> LF translation on the way in
    try:
        os.write(master, b"SF1000000000001\r")  # arrived while the port was being reopened
        time.sleep(0.05)
        port = serial.serial_for_url(path, do_not_open=True, timeout=0.2)
        calls: list[str] = []
        port._reset_input_buffer = lambda: calls.append("flush")
        port.open()
        try:
            assert calls == ["flush"], "pyserial's open() no longer flushes via _reset_input_buffer"
            assert port.read(16) == b"SF1000000000001\r"  # the patch kept the pending result
        finally:
            port.close()
    finally:
        os.close(master)
        os.close(slave)


def test_socket_url_open_flushes_through_reset_input_buffer_and_keeps_its_socket() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port_no = server.getsockname()[1]
    try:
        port = serial.serial_for_url(f"socket://127.0.0.1:{port_no}", do_not_open=True, timeout=0.2)
        calls: list[str] = []
        port.reset_input_buffer = lambda: calls.append("flush")
        port.open()
        peer, _ = server.accept()
        try:
            assert calls == ["flush"], "socket:// open() no longer flushes via reset_input_buffer"
            sock = getattr(port, "_socket", None)
            assert isinstance(sock, socket.socket), "socket:// keeps its socket elsewhere now"
            peer.sendall(b"]C0SF1\r\n")
            assert port.read(8) == b"]C0SF1\r\n"
        finally:
            peer.close()
            port.close()
    finally:
        server.close()
