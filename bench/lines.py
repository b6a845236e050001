"""Simulated scanners on real ptys, a pump that writes as fast as the reader takes, a pacer.

The frames come from ``simulators.serial_line_scanner`` (CR LF terminated, AIM ids, courier
waybill codes unique per scanner), so the agent parses exactly what the e2e tests send.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
from pathlib import Path
from typing import Any

from edge_agent.reading import Capture, Identity, Reading, uuid7
from simulators.pty_port import PtyPort
from simulators.serial_line_scanner import ScannerSim, ScannerSimConfig

#: The identity the benchmark agents publish under (topics ``edge/v1/BENCH/L1/<agent>/...``).
SITE, LINE = "BENCH", "L1"


class Line:
    """``n`` scanners, each a :class:`PtyPort` behind a symlink ``<dir>/scan<i>``.

    Args:
        workdir: where the symlinks live.
        n: number of scanners (device ids ``scan1`` .. ``scan<n>``).
    """

    def __init__(self, workdir: Path, n: int) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.ids = [f"scan{i}" for i in range(1, n + 1)]
        self.ports = [PtyPort(workdir / dev) for dev in self.ids]
        for port in self.ports:
            port.plug()
        self.sims = [
            ScannerSim(
                p,
                ScannerSimConfig(
                    framing="terminator", terminator="CRLF", aim=True, seed=i, scanner_no=i
                ),
            )
            for i, p in enumerate(self.ports, 1)
        ]
        self._next = [0] * n

    def device_tables(self) -> dict[str, dict[str, Any]]:
        """The ``[devices.<id>]`` tables of the agent config for these scanners."""
        return {
            dev: {
                "type": "serial_line_scanner",
                "port": str(port.link),
                "framing": "terminator",
                "terminator": "CRLF",
                "aim_ids": True,
            }
            for dev, port in zip(self.ids, self.ports, strict=True)
        }

    def next_frame(self, i: int) -> tuple[bytes, str]:
        """The next frame of scanner ``i`` (0-based) and its code; codes never repeat."""
        self._next[i] += 1
        code, aim = self.sims[i].code(self._next[i])
        return self.sims[i].frame(aim + code), code

    def blob(self, i: int, frames: int) -> bytes:
        """``frames`` consecutive frames of scanner ``i`` in one buffer (for the pump)."""
        return b"".join(self.next_frame(i)[0] for _ in range(frames))

    def unread_frames(self) -> int:
        """Read out what is still queued on the ptys' device side; returns its frame count.

        After the agent has exited, ``frames written - unread`` is what the agent took off the
        wire.
        """
        return sum(port.take_unread().count(b"\n") for port in self.ports)

    def close(self) -> None:
        """Unplug every pty."""
        for port in self.ports:
            port.close()


class Pump(threading.Thread):
    """Writes frames to every pty as fast as the reader drains them (poll for POLLOUT).

    One thread for all ports, large writes: the pump costs little CPU, so the agent gets
    almost all of the machine. Frames are counted by their LF.
    """

    BLOB_FRAMES = 4000

    def __init__(self, line: Line) -> None:
        super().__init__(daemon=True, name="pump")
        self.line = line
        self.frames = 0
        self._stop_evt = threading.Event()
        self._blobs = [line.blob(i, self.BLOB_FRAMES) for i in range(len(line.ports))]

    def run(self) -> None:
        """Write until stopped."""
        poller = select.poll()
        fds: dict[int, int] = {}
        for i, port in enumerate(self.line.ports):
            assert port.master is not None
            fds[port.master] = i
            poller.register(port.master, select.POLLOUT)
        offsets = dict.fromkeys(fds, 0)
        while not self._stop_evt.is_set():
            for fd, _ev in poller.poll(100):
                blob = self._blobs[fds[fd]]
                off = offsets[fd]
                try:
                    n = os.write(fd, blob[off : off + 65536])
                except BlockingIOError:
                    continue
                self.frames += blob.count(b"\n", off, off + n)
                offsets[fd] = (off + n) % len(blob)

    def stop(self) -> None:
        """Stop writing."""
        self._stop_evt.set()
        if self.ident is not None:
            self.join(2)


class Pacer(threading.Thread):
    """Writes frames round-robin over the scanners at ``rate`` per second in total.

    Records ``(device id, code, wall ns when the frame was written)`` per frame,
    for latency matching against the subscriber's receipt time (same CLOCK_REALTIME).

    Args:
        line: the scanners.
        rate: frames per second, all scanners together.
        seconds: how long (None: until ``stop()``).
    """

    def __init__(self, line: Line, rate: float, seconds: float | None) -> None:
        super().__init__(daemon=True, name="pacer")
        self.line = line
        self.rate = rate
        self.seconds = seconds
        self.sent: list[tuple[str, str, int]] = []
        self.started = 0.0
        self.ended = 0.0
        self._stop_evt = threading.Event()

    def run(self) -> None:
        """Write until the time is up or stopped."""
        period = 1.0 / self.rate
        n_dev = len(self.line.ports)
        self.started = next_t = time.monotonic()
        end = self.started + self.seconds if self.seconds is not None else float("inf")
        k = 0
        while not self._stop_evt.is_set():
            now = time.monotonic()
            if now >= end:
                break
            if next_t > now:
                time.sleep(next_t - now)
            i = k % n_dev
            frame, code = self.line.next_frame(i)
            fd = self.line.ports[i].master
            assert fd is not None
            while True:
                # Stamped just before the write: a GIL wait after the syscall must not make
                # the latency look shorter than it was (the write itself takes microseconds).
                t_ns = time.time_ns()
                try:
                    os.write(fd, frame)
                    break
                except BlockingIOError:
                    select.select([], [fd], [], 0.01)
            self.sent.append((self.line.ids[i], code, t_ns))
            k += 1
            next_t += period
            # After a stall (noisy machine) resume the rate; do not burst to catch up.
            next_t = max(next_t, time.monotonic() - 0.01)
        self.ended = time.monotonic()

    @property
    def achieved_rate(self) -> float:
        """Frames per second actually written."""
        wall = (self.ended or time.monotonic()) - self.started
        return len(self.sent) / wall if wall > 0 else 0.0

    def stop(self) -> None:
        """Stop writing and wait for the thread."""
        self._stop_evt.set()
        with contextlib.suppress(RuntimeError):
            self.join(5)


def sample_readings(n: int, device: str, agent: str, first_code: int = 1) -> list[Reading]:
    """``n`` readings exactly as edge-agent stores and publishes them (``Reading.to_json``)."""
    from drivers.serial_line_scanner import SerialLineScannerConfig, parse_frame  # noqa: PLC0415

    cfg = SerialLineScannerConfig(type="serial_line_scanner", port="/dev/null", aim_ids=True)
    sim = ScannerSim(PtyPort(None), ScannerSimConfig(aim=True, scanner_no=1))
    node = Identity(agent=agent, site=SITE, line=LINE, boot_id="bench")
    out = []
    for k in range(first_code, first_code + n):
        code, aim = sim.code(k)
        dec = parse_frame(sim.frame(aim + code), cfg)
        cap = Capture(device, dec, time.time_ns(), time.monotonic_ns())
        out.append(Reading(uuid7(), k, device, cap, node))
    return out
