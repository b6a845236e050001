"""The spool directory: how a test or the demo drives a simulated USB bus inside the daemon.

The daemon is a separate process, so it cannot be handed a backend object. With
``EDGE_AGENT_USB_BACKEND=sim:<dir>`` its HID driver asks :func:`spool_backend` for the
:class:`~simulators.hid_scanner.backend.SimBackend` of ``<dir>`` (one per process, shared by all
its HID devices), which mirrors the directory before every enumeration and while a read waits.
The other process writes with :class:`SpoolDevice`. Layout, one sub-directory per device::

    <dir>/<name>/device.json          {"vid", "pid", "serial", "mode", "busy_claims"}
    <dir>/<name>/plugged              the plug generation ("1", "2", ...); absent = unplugged
    <dir>/<name>/reports/<gen>-<seq>.bin
                                      reports to deliver, each as [length u8][report bytes];
                                      consumed (deleted) in name order; another gen's are dropped
    <dir>/<name>/stats.json           written back by the daemon side when a counter changes:
                                      {"detach_calls", "busy_refusals", "idle_timeouts"} (T11)

Every file is written under a dot-name and renamed into place, so the reader never sees half a
file; one writer per device and one reading process keep it free of locks. A file system is the
simplest channel that survives either side starting first or being killed (T1/T2 crash tests).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from simulators.hid_scanner.backend import SimBackend
from simulators.hid_scanner.device import SimDevice

#: Shortest interval between two mirrors of the directory, seconds (bounds the polling cost).
MIN_SYNC_S = 0.005
#: SimDevice counters written back to ``stats.json`` (the test process cannot see the daemon's).
STATS = ("detach_calls", "busy_refusals", "idle_timeouts")
_BACKENDS: dict[Path, SimBackend] = {}
_LOCK = threading.Lock()


def _atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def pack(reports: Sequence[bytes]) -> bytes:
    """Reports -> the spool file format: ``[length u8][report]`` each."""
    return b"".join(bytes([len(r)]) + r for r in reports)


def unpack(blob: bytes) -> list[bytes]:
    """The inverse of :func:`pack` (a truncated tail is dropped)."""
    out, i = [], 0
    while i < len(blob):
        n = blob[i]
        out.append(blob[i + 1 : i + 1 + n])
        i += 1 + n
    return out


class SpoolDevice:
    """The device side, in the test or demo process: plug, send reports, unplug, replug.

    Args:
        root: the spool directory (the daemon's ``EDGE_AGENT_USB_BACKEND=sim:<root>``).
        name: sub-directory name (unique per device).
        vid, pid, serial, mode: what the device enumerates as.
        busy_claims: how many claims fail with errno 16 before one succeeds (T11).
    """

    def __init__(self, root: Path, name: str, *, vid: int, pid: int, serial: str | None,
                 mode: str = "keyboard", busy_claims: int = 0) -> None:  # fmt: skip
        self.dir = root / name
        (self.dir / "reports").mkdir(parents=True, exist_ok=True)
        self.mode = mode
        spec = {"vid": vid, "pid": pid, "serial": serial, "mode": mode, "busy_claims": busy_claims}
        _atomic(self.dir / "device.json", json.dumps(spec).encode())
        self.generation = 1
        self.plugged = True
        self._seq = 0
        _atomic(self.dir / "plugged", b"1")

    def send(self, reports: Sequence[bytes]) -> bool:
        """Queue reports for the daemon; False (nothing sent) while unplugged."""
        if not self.plugged:
            return False
        self._seq += 1
        name = f"{self.generation:06d}-{self._seq:09d}.bin"
        _atomic(self.dir / "reports" / name, pack(reports))
        return True

    def unplug(self) -> None:
        """Pull the cable: the daemon's next read raises errno 19."""
        self.plugged = False
        (self.dir / "plugged").unlink(missing_ok=True)

    def replug(self) -> None:
        """Plug back in: the device re-enumerates with usbhid bound again."""
        self.generation += 1
        self.plugged = True
        _atomic(self.dir / "plugged", str(self.generation).encode())

    def stats(self) -> dict[str, int]:
        """What the daemon's side of the bus counted (see ``STATS``); empty before it looked."""
        try:
            raw: dict[str, int] = json.loads((self.dir / "stats.json").read_bytes())
        except (OSError, ValueError):
            return {}
        return raw

    def pending(self) -> int:
        """Report files the daemon has not taken yet."""
        return sum(not p.name.startswith(".") for p in (self.dir / "reports").iterdir())


class _Mirror:
    """Daemon side: keeps a SimBackend's devices equal to what the directory says."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.devices: dict[str, SimDevice] = {}
        self.backend = SimBackend(sync=self.sync)
        self._stats: dict[str, tuple[int, ...]] = {}
        self._lock = threading.Lock()
        self._last = 0.0

    def sync(self, *, force: bool = False) -> None:
        with self._lock:
            now = time.monotonic()
            if not force and now - self._last < MIN_SYNC_S:
                return
            self._last = now
            subdirs = sorted(self.root.iterdir()) if self.root.is_dir() else []
            for sub in subdirs:
                dev = self.devices.get(sub.name) or self._load(sub)
                if dev is not None:
                    self._sync_device(sub, dev)
                    self._write_stats(sub, dev)

    def _write_stats(self, sub: Path, dev: SimDevice) -> None:
        values = tuple(getattr(dev, name) for name in STATS)
        if self._stats.get(sub.name) != values:
            self._stats[sub.name] = values
            _atomic(sub / "stats.json", json.dumps(dict(zip(STATS, values, strict=True))).encode())

    def _load(self, sub: Path) -> SimDevice | None:
        try:
            spec = json.loads((sub / "device.json").read_bytes())
        except (OSError, ValueError):
            return None
        dev = SimDevice(spec["vid"], spec["pid"], spec["serial"], spec["mode"],
                        busy_claims=spec["busy_claims"], plugged=False)  # fmt: skip
        self.devices[sub.name] = dev
        self.backend.devices.append(dev)
        return dev

    def _sync_device(self, sub: Path, dev: SimDevice) -> None:
        try:
            generation: int | None = int((sub / "plugged").read_bytes())
        except (OSError, ValueError):
            generation = None
        if generation is None and dev.plugged:
            dev.unplug()
        elif generation is not None and (not dev.plugged or generation != dev.generation):
            dev.replug(generation)
        try:
            files = sorted(p for p in (sub / "reports").iterdir() if not p.name.startswith("."))
        except OSError:
            return
        for path in files:
            blob = path.read_bytes()
            path.unlink()
            if dev.plugged and path.name.startswith(f"{dev.generation:06d}-"):
                dev.send(unpack(blob))


def spool_backend(root: Path) -> SimBackend:
    """The one SimBackend of this process for spool directory ``root``."""
    key = root.resolve()
    with _LOCK:
        if key not in _BACKENDS:
            _BACKENDS[key] = _Mirror(key).backend
        return _BACKENDS[key]
