"""Shared measuring parts: summaries, /proc sampling, the sd_notify socket, the C subscriber.

Everything here measures from outside the process under test: CPU and memory come from
``/proc/<pid>``, readiness from a ``NOTIFY_SOCKET`` we bind, receipt from ``mosquitto_sub``
(C, so the subscriber is never the Python bottleneck it would be with paho).
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import socket
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simulators.mosquitto import Mosquitto

#: Every reading, single or inside a batch, carries this exactly once (its schema field's value).
READING_MARK = b'"edge-agent/reading/v1"'
#: Topic filters a backend subscribes to (topics.py); the probe topic checks the subscription.
READING_TOPICS = ("edge/v1/+/+/+/reading/+", "edge/v1/+/+/+/batch")
#: Alarms are counted too: a run that raises them (queue full, writer overflow) says so.
ALARM_TOPIC = "edge/v1/+/+/+/alarm"
ALARM_MARK = b'"edge-agent/alarm/v1"'
PROBE_TOPIC = "bench/probe"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---- summaries -------------------------------------------------------------------------------
def summary(values: list[float]) -> dict[str, Any]:
    """Median and spread of repeated runs: min, max, relative range ((max-min)/median)."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return {"median": None, "min": None, "max": None, "n": 0, "spread": None, "values": []}
    med = statistics.median(vals)
    spread = (max(vals) - min(vals)) / med if med else 0.0
    return {
        "median": med,
        "min": min(vals),
        "max": max(vals),
        "n": len(vals),
        "spread": spread,
        "values": vals,
    }


def percentile(sorted_vals: list[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted list (p in 0..100)."""
    if not sorted_vals:
        return float("nan")
    k = max(0, min(len(sorted_vals) - 1, math.ceil(p / 100 * len(sorted_vals)) - 1))
    return sorted_vals[k]


# ---- /proc -----------------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (all its threads, exited ones included), in seconds."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_seconds_precise(pid: int) -> float:
    """Sum of ``schedstat`` run time over the live threads of ``pid`` (ns resolution)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def status_kb(pid: int, key: str) -> int:
    """A ``/proc/<pid>/status`` value in kB (``VmRSS``, ``VmHWM``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def context_switches(pid: int) -> int:
    """Voluntary + involuntary context switches over the live threads of ``pid``."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            for line in (task / "status").read_text().splitlines():
                if "ctxt_switches:" in line:
                    total += int(line.split()[1])
    return total


@dataclass
class CpuMark:
    """CPU counters of a process at one moment."""

    t: float
    cpu: float
    cpu_precise: float
    ctxt: int

    @classmethod
    def take(cls, pid: int) -> CpuMark:
        """Read the counters of ``pid`` now."""
        return cls(
            time.monotonic(), cpu_seconds(pid), cpu_seconds_precise(pid), context_switches(pid)
        )

    def until(self, later: CpuMark) -> dict[str, float]:
        """CPU used between two marks: seconds, share of one core, wake-ups per second."""
        wall = later.t - self.t
        cpu = later.cpu - self.cpu
        precise = later.cpu_precise - self.cpu_precise
        return {
            "wall_s": wall,
            "cpu_s": cpu,
            "cpu_precise_s": precise,
            "cpu_pct_of_core": 100 * cpu / wall if wall > 0 else 0.0,
            "cpu_precise_pct_of_core": 100 * precise / wall if wall > 0 else 0.0,
            "ctxt_per_s": (later.ctxt - self.ctxt) / wall if wall > 0 else 0.0,
        }


class RssSampler(threading.Thread):
    """Samples VmRSS of a process every ``every`` seconds until stopped (for the growth chart)."""

    def __init__(self, pid: int, every: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.every = every
        self.samples: list[tuple[float, int]] = []
        self._stop_evt = threading.Event()

    def run(self) -> None:
        """Sample until stopped or the process is gone."""
        while not self._stop_evt.wait(self.every):
            try:
                self.samples.append((time.monotonic(), status_kb(self.pid, "VmRSS")))
            except OSError:
                return

    def stop(self) -> int:
        """Stop sampling; returns the highest RSS seen, in kB."""
        self._stop_evt.set()
        self.join(1)
        return max((kb for _, kb in self.samples), default=0)


# ---- sd_notify -------------------------------------------------------------------------------
class NotifySocket:
    """An AF_UNIX datagram socket standing in for systemd's ``$NOTIFY_SOCKET``.

    Args:
        path: where to bind (removed first if it exists).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[tuple[float, str]] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            try:
                data = self.sock.recv(4096)
            except OSError:
                return
            with self._cond:
                self.messages.append((time.monotonic(), data.decode(errors="replace")))
                self._cond.notify_all()

    def wait_for(self, assignment: str, timeout: float) -> float | None:
        """Monotonic time of the first datagram containing ``assignment`` (e.g. READY=1)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for t, msg in self.messages:
                    if assignment in msg.split("\n"):
                        return t
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    def close(self) -> None:
        """Close, unlink, and remove its directory if that is now empty."""
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        with contextlib.suppress(OSError):
            self.path.parent.rmdir()


# ---- the subscriber --------------------------------------------------------------------------
class Receiver:
    """The backend: ``mosquitto_sub`` at QoS 1 on the reading and batch topics.

    Counts readings (batches expanded) as its output streams in; with ``stamps`` it also keeps
    every message with the subscriber's own receipt time (``%U``: CLOCK_REALTIME taken by the C
    client when the message arrives, so pipe delays do not count).

    Args:
        port: broker port on 127.0.0.1.
        stamps: keep ``(receipt_ns, payload)`` of every message (latency runs).
        persistent: a persistent session (``-c``): across a broker restart the broker keeps
            the subscription and queues what arrives before ``mosquitto_sub`` reconnects.
    """

    def __init__(self, port: int, *, stamps: bool = False, persistent: bool = False) -> None:
        self.port = port
        self.stamps = stamps
        self.persistent = persistent
        self.client_id = f"bench-sub-{id(self)}"
        self.count = 0
        self.alarms = 0
        self.first_t: float | None = None
        self.last_t: float | None = None
        self.lines: list[bytes] = []
        self._probe_seen = threading.Event()
        self._target = 0
        self._target_t: float | None = None
        self._hit = threading.Event()
        self._lock = threading.Lock()
        exe = shutil.which("mosquitto_sub")
        if exe is None:
            msg = "mosquitto_sub not found (apt-get install mosquitto-clients)"
            raise FileNotFoundError(msg)
        cmd = [exe, "-h", "127.0.0.1", "-p", str(port), "-q", "1", "-i", self.client_id]
        for topic in (*READING_TOPICS, ALARM_TOPIC, PROBE_TOPIC):
            cmd += ["-t", topic]
        if stamps:
            cmd += ["-F", "%U %p"]
        if persistent:
            cmd += ["-c"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        # Marks cut in two by a read are completed by the next one: keep each mark's tail.
        carry_r = carry_a = b""
        partial = b""
        while True:
            data = os.read(fd, 1 << 20)
            if not data:
                return
            now = time.monotonic()
            buf = carry_r + data
            found = buf.count(READING_MARK)
            carry_r = buf[-(len(READING_MARK) - 1) :]
            abuf = carry_a + data
            self.alarms += abuf.count(ALARM_MARK)
            carry_a = abuf[-(len(ALARM_MARK) - 1) :]
            if self.stamps:
                lines = (partial + data).split(b"\n")
                partial = lines.pop()
                self.lines.extend(lines)
            if not self._probe_seen.is_set() and b"bench-probe" in buf:
                self._probe_seen.set()
            if not found:
                continue
            with self._lock:
                self.count += found
                if self.first_t is None:
                    self.first_t = now
                self.last_t = now
                if self._target and self._target_t is None and self.count >= self._target:
                    self._target_t = now
                    self._hit.set()

    def wait_subscribed(self, timeout: float = 10.0) -> None:
        """Publish probes until one comes back: the subscription is in place."""
        deadline = time.monotonic() + timeout
        exe = shutil.which("mosquitto_pub") or "mosquitto_pub"
        while time.monotonic() < deadline:
            subprocess.run(
                [
                    exe,
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-t",
                    PROBE_TOPIC,
                    "-m",
                    "bench-probe",
                    "-q",
                    "1",
                ],
                check=False,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if self._probe_seen.wait(0.3):
                self.lines.clear()
                return
        msg = "subscriber did not receive its probe"
        raise TimeoutError(msg)

    def reset(self) -> None:
        """Forget counts (keeps the subscription)."""
        with self._lock:
            self.count = self.alarms = 0
            self.first_t = self.last_t = None
            self._target, self._target_t = 0, None
            self._hit.clear()
            self.lines.clear()

    def wait_count(self, n: int, timeout: float) -> float | None:
        """Monotonic time at which ``n`` readings had arrived (None on timeout)."""
        with self._lock:
            if self.count >= n:
                return self.last_t
            self._target, self._target_t = n, None
            self._hit.clear()
        self._hit.wait(timeout)
        with self._lock:
            t = self._target_t
            self._target = 0
            return t

    def close(self) -> None:
        """Stop the subscriber process."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._thread.join(2)
        if self.proc.stdout:
            self.proc.stdout.close()
        if self.persistent:
            # End the session: left behind, the broker would queue every later reading of the
            # run for it (without limit), and each broker restart would save a bigger file.
            # A clean-session connect with the same client id discards it (-E: exit once
            # subscribed).
            subprocess.run(
                [shutil.which("mosquitto_sub") or "mosquitto_sub", "-h", "127.0.0.1",
                 "-p", str(self.port), "-i", self.client_id, "-t", PROBE_TOPIC, "-E"],
                check=False, timeout=10, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip


# ---- broker ----------------------------------------------------------------------------------
#: Same as simulators/mosquitto.py but without ``autosave_on_changes``: with it, Mosquitto
#: rewrites its whole database after every message queued to a QoS 1 subscriber (~2k msg/s
#: here), which caps every one-reading-per-message client at the broker, not at the client.
PLAIN_CONF = """\
listener {port} 127.0.0.1
allow_anonymous true
persistence true
persistence_location {dir}/
max_queued_messages 0
log_dest file {dir}/mosquitto.log
log_type error
log_type warning
log_type notice
"""


@dataclass
class Broker:
    """The one private Mosquitto of a run."""

    profile: str
    mosq: Mosquitto
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def start(cls, workdir: Path, profile: str) -> Broker:
        """``durable``: simulators/mosquitto.py as is; ``plain``: without autosave on changes."""
        mosq = Mosquitto(workdir / "broker")
        if profile == "plain":
            mosq.conf.write_text(PLAIN_CONF.format(port=mosq.port, dir=mosq.dir))
        mosq.start()
        return cls(profile, mosq, {"profile": profile, "config": mosq.conf.read_text()})

    @property
    def port(self) -> int:
        """TCP port on 127.0.0.1."""
        return self.mosq.port

    def stop(self) -> None:
        """Stop the broker."""
        self.mosq.stop()


def fs_type(path: Path) -> str:
    """Filesystem type holding ``path`` (from /proc/mounts): tmpfs would make fsync free."""
    best, kind = "", "unknown"
    target = str(path.resolve())
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            mnt = parts[1]
            if target.startswith(mnt) and len(mnt) > len(best):
                best, kind = mnt, parts[2]
    return kind


def loadavg() -> list[float]:
    """1, 5 and 15 minute load averages."""
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
