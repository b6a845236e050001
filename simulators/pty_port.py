"""A real pseudo-terminal standing in for a serial port, with a stable symlink and hot-unplug.

``plug()`` opens a pty pair (``pty.openpty``), puts it in raw mode and points the symlink
(like ``/dev/serial/by-id/...``) at the slave. ``unplug()`` removes the symlink and closes both
ends, so a reader gets EIO just as with a pulled USB-serial cable; the next ``plug()`` gets a
new ``/dev/pts/N`` behind the same symlink, as a re-enumerated ``ttyACMn`` would.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import pty
import struct
import termios
import threading
import tty
from pathlib import Path


class PtyPort:
    """One simulated serial port.

    Args:
        link: stable path to keep pointing at the current pty (None: no symlink).
    """

    def __init__(self, link: Path | None = None) -> None:
        self.link = link
        self.master: int | None = None
        self._slave: int | None = None
        self.path = ""
        self.plugs = 0
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        """What a driver should open: the symlink if any, else the pty path."""
        return str(self.link) if self.link else self.path

    def plug(self) -> str:
        """Create a new pty and point the symlink at it; returns the pty path."""
        with self._lock:
            master, slave = pty.openpty()
            tty.setraw(slave)
            tty.setraw(master)
            os.set_blocking(master, False)
            self.master, self._slave = master, slave
            self.path = os.ttyname(slave)
            self.plugs += 1
            if self.link is not None:
                tmp = self.link.with_name(f".{self.link.name}.tmp")
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
                tmp.symlink_to(self.path)
                tmp.replace(self.link)
            return self.path

    def unplug(self) -> None:
        """Remove the symlink and close the pty: the reader sees the device vanish."""
        with self._lock:
            if self.link is not None:
                with contextlib.suppress(FileNotFoundError):
                    self.link.unlink()
            for fd in (self.master, self._slave):
                if fd is not None:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            self.master = self._slave = None

    def write(self, data: bytes) -> int:
        """Write what fits; returns bytes written (0 when unplugged or the buffer is full)."""
        with self._lock:
            if self.master is None:
                return 0
            try:
                return os.write(self.master, data)
            except OSError as err:
                if err.errno in (errno.EAGAIN, errno.EIO):
                    return 0
                raise

    def take_unread(self) -> bytes:
        """Read out, from the host's side, what was written to the host and not read yet
        (after the reader died: what it never took off the wire). b"" when unplugged."""
        if not self.path:
            return b""
        fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
        data = b""
        try:
            while chunk := os.read(fd, 65536):
                data += chunk
        except BlockingIOError:
            pass
        finally:
            os.close(fd)
        return data

    def pending(self) -> int:
        """Bytes written to the host that it has not read yet (0 when unplugged)."""
        with self._lock:
            if self._slave is None:
                return 0
            try:
                raw = fcntl.ioctl(self._slave, termios.FIONREAD, b"\0\0\0\0")
            except OSError:
                return 0
            return int(struct.unpack("i", raw)[0])

    def read(self) -> bytes:
        """Bytes the host wrote to the device (commands), non-blocking."""
        with self._lock:
            if self.master is None:
                return b""
            try:
                return os.read(self.master, 4096)
            except OSError:
                return b""

    def close(self) -> None:
        """Unplug for good."""
        self.unplug()
