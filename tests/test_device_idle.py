"""An idle device thread sleeps: it wakes for bytes, its deadlines, ``stop()`` and ``call()``.

Real ptys (simulators/pty_port.py) and real threads; wake-ups are the thread's context
switches as the kernel counts them (``/proc/self/task/<tid>/status``).
"""

from __future__ import annotations

import contextlib
import os
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from drivers.serial_line_scanner import SerialLineScannerConfig, SerialLineScannerDriver
from drivers.toledo_continuous import ToledoContinuousConfig, ToledoContinuousDriver
from edge_agent.errors import DeviceIOError
from edge_agent.reading import Capture
from edge_agent.supervisor import DeviceWorker
from simulators.pty_port import PtyPort


def switches(tid: int) -> int:
    """Voluntary + involuntary context switches of one thread of this process so far."""
    total = 0
    for line in Path(f"/proc/self/task/{tid}/status").read_text().splitlines():
        if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
            total += int(line.split()[1])
    return total


def open_fds() -> set[tuple[str, str]]:
    """This process's open fds with what they point at (other tests' threads may close theirs
    meanwhile: compare what was opened, not the count)."""
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # closed meanwhile (the listdir's own fd)
            out.add((fd, os.readlink(f"/proc/self/fd/{fd}")))
    return out


class Running:
    """A serial line scanner on a pty, read by a DeviceWorker."""

    def __init__(self, link: Path) -> None:
        self.port = PtyPort(link)
        self.port.plug()
        cfg = SerialLineScannerConfig.model_validate(
            {"type": "serial_line_scanner", "port": self.port.url}
        )
        self.got: list[Capture] = []
        self.states: list[str] = []
        self.connected = threading.Event()
        drv = SerialLineScannerDriver("scan_1", cfg)
        self.worker = DeviceWorker(drv, self.got.append, self._on)
        self.worker.start()
        assert self.connected.wait(5), self.states

    def _on(self, _dev: str, state: str, _reason: str) -> None:
        self.states.append(state)
        if state == "connected":
            self.connected.set()

    def wait_for(self, n: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.got) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(self.got) >= n, self.got

    def stop(self) -> float:
        """Seconds from stop() to the thread's end."""
        t0 = time.monotonic()
        self.worker.stop()
        self.worker.join(5)
        took = time.monotonic() - t0
        assert not self.worker.is_alive()
        return took


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    r = Running(tmp_path / "scanner")
    yield r
    r.stop()
    r.port.close()


def test_an_idle_device_thread_does_not_wake_up(running: Running) -> None:
    running.port.write(b"A1\r\n")
    running.wait_for(1)
    tid = running.worker.native_id
    assert tid is not None
    before = switches(tid)
    time.sleep(2.0)
    woke = switches(tid) - before
    assert woke <= 2, f"{woke} wake-ups in 2 s of silence (0.25 s polling made 8)"
    running.port.write(b"A2\r\n")  # and it still reads at once
    running.wait_for(2)
    assert [c.decoded.value for c in running.got] == ["A1", "A2"]


def test_stop_returns_promptly_and_closes_the_wake_fd(tmp_path: Path) -> None:
    fds = open_fds()
    took = []
    for i in range(5):
        r = Running(tmp_path / f"scanner{i}")
        time.sleep(0.3)  # idle: the thread sleeps in select
        took.append(r.stop())
        r.port.close()
        assert r.states[-1] == "stopped"
    assert statistics.median(took) <= 0.1, took
    assert max(took) < 1.0, took
    # the ports and each worker's eventfd closed
    left = [t for _fd, t in open_fds() - fds if "eventfd" in t or "/dev/pts" in t or "ptmx" in t]
    assert left == [], left


def test_a_device_action_runs_at_once_in_the_idle_device_thread(running: Running) -> None:
    time.sleep(0.3)
    took = []
    for _ in range(5):
        t0 = time.monotonic()
        name = running.worker.call(lambda: threading.current_thread().name)
        took.append(time.monotonic() - t0)
        assert name == "device-scan_1"
    assert statistics.median(took) <= 0.05, took
    running.port.write(b"B1\r\n")  # the read goes on after the calls
    running.wait_for(1)


def _eventfds() -> int:
    """eventfds open in this process (a worker's waker is one)."""
    fd_dir = Path("/proc/self/fd")
    count = 0
    for fd in fd_dir.iterdir():
        with contextlib.suppress(OSError):
            count += os.readlink(fd) == "anon_inode:[eventfd]"
    return count


def test_a_stopped_worker_never_started_holds_no_fd(tmp_path: Path) -> None:
    # eventfds, not all fds: other tests' threads in this (xdist) process may still be
    # closing sockets or ptys; none of them makes an eventfd while this test runs
    before = _eventfds()
    cfg = SerialLineScannerConfig.model_validate(
        {"type": "serial_line_scanner", "port": str(tmp_path / "absent")}
    )
    workers = [
        DeviceWorker(SerialLineScannerDriver(f"never{i}", cfg), lambda _c: None, lambda *_a: None)
        for i in range(5)
    ]
    for w in workers:
        w.stop()
    assert _eventfds() <= before


def test_a_stall_watchdog_fires_on_its_deadline_without_polling(tmp_path: Path) -> None:
    """The read sleeps until the stall deadline itself: not early, not a poll interval late."""
    port = PtyPort(tmp_path / "toledo")
    port.plug()
    cfg = ToledoContinuousConfig.model_validate(
        {"type": "toledo_continuous", "port": port.url, "max_capacity_g": 60000,
         "stall_timeout_ms": 600}
    )  # fmt: skip
    drv = ToledoContinuousDriver("scale_1", cfg)
    try:
        drv.open()
        t0 = time.monotonic()
        with pytest.raises(DeviceIOError, match="no data for"):
            drv.read(30.0)
        took = time.monotonic() - t0
    finally:
        drv.close()
        port.close()
    assert 0.6 <= took < 0.75, took


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def connect(port: int, timeout: float = 5.0) -> socket.socket:
    """A client connection to 127.0.0.1:port, retried until the port listens."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=1)
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


@pytest.mark.parametrize("scheme", ["socket", "listen"])
def test_an_idle_tcp_device_thread_sleeps_and_stops_at_once(scheme: str) -> None:
    """``socket://`` (we connect) and ``listen://`` (the device connects): the same wait."""
    server = socket.create_server(("127.0.0.1", 0)) if scheme == "socket" else None
    port = server.getsockname()[1] if server is not None else free_port()
    cfg = SerialLineScannerConfig.model_validate(
        {"type": "serial_line_scanner", "port": f"{scheme}://127.0.0.1:{port}"}
    )
    got: list[Capture] = []
    up = threading.Event()
    worker = DeviceWorker(
        SerialLineScannerDriver(f"tcp_{scheme}", cfg), got.append,
        lambda _d, s, _r: up.set() if s == "connected" else None,
    )  # fmt: skip
    worker.start()
    peer = server.accept()[0] if server is not None else connect(port)
    try:
        assert up.wait(5)
        peer.sendall(b"T1\r\n")
        deadline = time.monotonic() + 5
        while not got and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [c.decoded.value for c in got] == ["T1"]
        tid = worker.native_id
        assert tid is not None
        before = switches(tid)
        time.sleep(1.5)
        woke = switches(tid) - before
        assert woke <= 2, f"{woke} wake-ups in 1.5 s of silence"
        t0 = time.monotonic()
        assert worker.call(lambda: "ok") == "ok"
        worker.stop()
        worker.join(5)
        assert time.monotonic() - t0 < 0.2 and not worker.is_alive()
    finally:
        worker.stop()
        peer.close()
        if server is not None:
            server.close()
