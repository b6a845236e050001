"""A serial device node opened with ``os.open`` and ``termios``: no pyserial object involved.

pyserial's ``open()`` flushes pending input, and the only way around that was patching a
private method. Owning the fd instead keeps the bytes a scanner sent while we reconnected
(``keep_input``), gives the selector a real file descriptor, and leaves nothing of pyserial's
internals to pin. The line settings are those pyserial applies (raw mode, no flow control,
``CLOCAL | CREAD``); ``exclusive`` is an ``flock(LOCK_EX | LOCK_NB)``, as pyserial's is, so two
programs that both ask for it exclude each other.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import struct
import termios
import time

#: Our ``Baud`` values -> termios speed constants.
SPEEDS = {
    1200: termios.B1200, 2400: termios.B2400, 4800: termios.B4800, 9600: termios.B9600,
    19200: termios.B19200, 38400: termios.B38400, 57600: termios.B57600,
    115200: termios.B115200, 230400: termios.B230400,
}  # fmt: skip
READ_CHUNK = 65536
#: Mark/space parity bit (Linux value; cleared so a previous user's setting cannot stay).
CMSPAR = getattr(termios, "CMSPAR", 0o10000000000)


class DeviceGone(OSError):  # noqa: N818 - an OSError, named for what it says
    """The fd reports readable but reads nothing: the adapter is going away."""


def line_settings(attrs: list[object], baud: int, bytesize: int, parity: str, stop: int) -> None:
    """Set ``termios.tcgetattr`` attributes to raw mode with these line settings, in place."""
    iflag, oflag, cflag, lflag = (x if isinstance(x, int) else 0 for x in attrs[:4])
    cflag |= termios.CLOCAL | termios.CREAD
    lflag &= ~(termios.ICANON | termios.ECHO | termios.ECHOE | termios.ECHOK | termios.ECHONL)
    lflag &= ~(termios.ISIG | termios.IEXTEN | termios.ECHOCTL | termios.ECHOKE)
    oflag &= ~(termios.OPOST | termios.ONLCR | termios.OCRNL)
    iflag &= ~(termios.INLCR | termios.IGNCR | termios.ICRNL | termios.IGNBRK | termios.IUCLC)
    iflag &= ~(termios.PARMRK | termios.INPCK | termios.ISTRIP)
    iflag &= ~(termios.IXON | termios.IXOFF | termios.IXANY)
    cflag &= ~(termios.CSIZE | termios.CSTOPB | termios.CRTSCTS)
    cflag |= termios.CS8 if bytesize == 8 else termios.CS7
    cflag |= termios.CSTOPB if stop == 2 else 0
    cflag &= ~(termios.PARENB | termios.PARODD | CMSPAR)
    cflag |= {"N": 0, "E": termios.PARENB, "O": termios.PARENB | termios.PARODD}[parity]
    attrs[:6] = [iflag, oflag, cflag, lflag, SPEEDS[baud], SPEEDS[baud]]
    cc = attrs[6]
    assert isinstance(cc, list)
    cc[termios.VMIN], cc[termios.VTIME] = 0, 0


class TtyTransport:
    """An open serial device node.

    Args:
        path: the device node (or a symlink to it).
        settings: ``(baudrate, bytesize, parity, stopbits)``.
        exclusive: take an flock on the port; another holder makes the open fail with EAGAIN.
        keep_input: keep what the kernel buffered before the open (else flushed: a polled
            scale's stale replies).

    Raises:
        OSError: the node is absent (ENOENT), held (EAGAIN) or not a terminal.
    """

    generation = 0

    def __init__(
        self, path: str, settings: tuple[int, int, str, int], *, exclusive: bool, keep_input: bool
    ) -> None:
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            if exclusive:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            attrs = termios.tcgetattr(fd)
            line_settings(attrs, *settings)
            termios.tcsetattr(fd, termios.TCSANOW, attrs)
            try:  # assert DTR and RTS, as pyserial does; a pty has no modem lines
                lines = struct.pack("I", termios.TIOCM_DTR | termios.TIOCM_RTS)
                fcntl.ioctl(fd, termios.TIOCMBIS, lines)
            except OSError as err:
                if err.errno not in (errno.EINVAL, errno.ENOTTY):
                    raise
            if not keep_input:
                termios.tcflush(fd, termios.TCIFLUSH)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd

    def fileno(self) -> int:
        """The fd, for a selector."""
        return self.fd

    def read(self, timeout: float, wake: int = -1) -> bytes:
        """What has arrived, waiting up to ``timeout`` s for the first byte; b"" if none.

        ``wake``: an fd that ends the wait early when readable (b"" then), -1: none.
        """
        fds = [self.fd, wake] if wake >= 0 else [self.fd]
        if timeout > 0 and self.fd not in select.select(fds, [], [], timeout)[0]:
            return b""
        try:
            data = os.read(self.fd, READ_CHUNK)
        except BlockingIOError:
            return b""
        if not data:
            raise DeviceGone("device disconnected")
        return data

    def write(self, data: bytes, timeout: float) -> None:
        """Write all of ``data`` within ``timeout`` s. Raises OSError / TimeoutError."""
        view, deadline = memoryview(data), time.monotonic() + timeout
        while view:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([], [self.fd], [], left)[1]:
                msg = "write timed out"
                raise TimeoutError(msg)
            view = view[os.write(self.fd, view) :]

    def close(self) -> None:
        """Close the fd (the flock goes with it)."""
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)
