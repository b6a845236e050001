"""What edge-agent still takes from pyserial, pinned; and the behaviour we replaced it with.

pyserial no longer opens device nodes or TCP links (drivers/common/tty.py, drivers/common/tcp.py
own the fd), so no private attribute of it is touched. What is left, all public API:

* ``serial_for_url`` for the other URLs (``loop://`` in tests, ``spy://`` traces): a read with
  ``timeout`` set waits for the first byte, ``in_waiting`` says what else is there, and
  ``SerialException`` is an ``OSError`` (the link catches both);
* ``serial.tools.list_ports.comports()`` with ``device``, ``description``, ``hwid`` (``edge-agent
  ports``, the serial line scanner's ``detect()``);
* the reason we left: pyserial's ``open()`` flushes the input a scanner sent while we were
  reconnecting. If that ever changes, keeping our own tty open is still right, but say so.
"""

from __future__ import annotations

import os
import pty
import socket
import time
import tty
from pathlib import Path

import pytest
import serial
from serial.tools import list_ports

from drivers.common.link import Link
from drivers.serial_line_scanner import SerialLineScannerConfig
from simulators.pty_port import PtyPort


def _cfg(port: str) -> SerialLineScannerConfig:
    return SerialLineScannerConfig.model_validate({"type": "serial_line_scanner", "port": port})


def test_loop_url_reads_with_timeout_and_in_waiting() -> None:
    port = serial.serial_for_url("loop://", timeout=0)
    try:
        port.timeout = 0.1
        t0 = time.monotonic()
        assert port.read(1) == b""
        assert 0.05 <= time.monotonic() - t0 < 1.0, "read(1) no longer waits for the timeout"
        port.write(b"]C0SF1\r\n")
        assert port.read(1) == b"]"
        assert port.in_waiting == 7
        assert port.read(port.in_waiting) == b"C0SF1\r\n"
    finally:
        port.close()
    assert issubclass(serial.SerialException, OSError)


def test_link_reads_loop_url_through_the_public_api() -> None:
    link = Link(_cfg("loop://"))
    link.open()
    try:
        link.write(b"SF1\r\n")
        assert link.read(0.5) == b"SF1\r\n"
        assert link.read(0.05) == b""
        assert link.fileno() == -1
    finally:
        link.close()


def test_comports_has_the_fields_detect_uses() -> None:
    for p in list_ports.comports():
        assert isinstance(p.device, str) and isinstance(p.description, str)
        assert isinstance(p.hwid, str)


def test_pyserial_open_still_flushes_pending_input() -> None:
    """Why device nodes are not opened through pyserial (keep_input)."""
    master, slave = pty.openpty()
    tty.setraw(slave)
    try:
        os.write(master, b"SF1000000000001\r")
        time.sleep(0.05)
        port = serial.serial_for_url(os.ttyname(slave), timeout=0.2)
        try:
            assert port.read(16) == b"", "pyserial's open() keeps input now: keep_input is free"
        finally:
            port.close()
    finally:
        os.close(master)
        os.close(slave)


def test_our_tty_open_keeps_pending_input_unless_asked_not_to(tmp_path: Path) -> None:
    sim = PtyPort(tmp_path / "usb-scanner-if00")
    sim.plug()
    try:
        for keep, want in ((True, b"SF1000000000001\r"), (False, b"")):
            sim.write(b"SF1000000000001\r")  # arrived while the port was being reopened
            time.sleep(0.05)
            link = Link(_cfg(sim.url), keep_input=keep)
            link.open()
            try:
                assert link.read(0.2) == want
            finally:
                link.close()
    finally:
        sim.close()


def test_socket_url_is_our_socket_and_close_releases_its_fd() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    try:
        link = Link(_cfg(f"socket://127.0.0.1:{server.getsockname()[1]}"))
        link.open()
        peer, _ = server.accept()
        fd = link.fileno()
        peer.sendall(b"]C0SF1\r\n")
        assert link.read(1.0) == b"]C0SF1\r\n"
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
        peer.close()  # RST: pyserial's close() leaked the fd here (pyserial/pyserial#555)
        t0 = time.monotonic()
        link.close()
        assert time.monotonic() - t0 < 0.1
        with pytest.raises(OSError):
            os.fstat(fd)  # closed, not leaked
    finally:
        server.close()
