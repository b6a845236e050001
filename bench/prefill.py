"""Backlogs: committed readings written into a queue file before the agent starts.

edge-agent's queue is filled with the real :class:`edge_agent.outbox.Outbox` (the same
``apply()`` the writer thread calls, group-committed 5,000 at a time), from frames parsed by
the real driver parser, spread over the scanners like a night of traffic. The baseline's
queue is filled with its own ``SQLiteAckQueue.put``. Each size is built once per run and
copied for every repeat.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from bench.lines import LINE, SITE
from drivers.serial_line_scanner import SerialLineScannerConfig, parse_frame
from edge_agent.outbox import Outbox
from edge_agent.reading import Capture, Identity, boot_id
from simulators.pty_port import PtyPort
from simulators.serial_line_scanner import ScannerSim, ScannerSimConfig

CHUNK = 5000


def _sims(devices: int) -> list[ScannerSim]:
    return [
        ScannerSim(PtyPort(None), ScannerSimConfig(aim=True, scanner_no=i, seed=i))
        for i in range(1, devices + 1)
    ]


def copy_db(src: Path, dst: Path) -> None:
    """Copy a closed SQLite file (and its -wal, if any) to ``dst``."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    for suffix in ("-wal", "-shm"):
        side = src.with_name(src.name + suffix)
        if side.exists():
            shutil.copyfile(side, dst.with_name(dst.name + suffix))


def prefill_edge(
    cache: Path, sizes: list[int], devices: int, agent_id: str, max_bytes: int
) -> tuple[dict[int, Path], dict[str, Any]]:
    """Snapshots ``cache/edge-<n>.db`` holding n pending readings, for each n in ``sizes``."""
    cache.mkdir(parents=True, exist_ok=True)
    work = cache / "edge-fill.db"
    for p in cache.glob("edge-fill.db*"):
        p.unlink()
    cfg = SerialLineScannerConfig(type="serial_line_scanner", port="/dev/null", aim_ids=True)
    sims = _sims(devices)
    ids = [f"scan{i}" for i in range(1, devices + 1)]
    node = Identity(agent=agent_id, site=SITE, line=LINE, boot_id=boot_id())
    snaps: dict[int, Path] = {}
    done = 0
    t0 = time.monotonic()
    for size in sorted(set(sizes)):
        outbox = Outbox(work, node, max_bytes, 72 * 3600)
        while done < size:
            take = min(CHUNK, size - done)
            caps = []
            for k in range(done, done + take):
                i = k % devices
                code, aim = sims[i].code(k // devices + 1)
                dec = parse_frame(sims[i].frame(aim + code), cfg)
                caps.append(Capture(ids[i], dec, time.time_ns(), time.monotonic_ns()))
            _, dropped = outbox.apply(caps)
            if dropped:
                msg = f"queue bound hit while prefilling ({len(dropped)} dropped): raise max_bytes"
                raise RuntimeError(msg)
            done += take
        outbox.close()
        snaps[size] = cache / f"edge-{size}.db"
        copy_db(work, snaps[size])
    secs = time.monotonic() - t0
    for p in cache.glob("edge-fill.db*"):
        p.unlink()
    largest = snaps[max(sizes)]
    return snaps, {
        "readings": max(sizes),
        "seconds": secs,
        "readings_per_s": max(sizes) / secs if secs else None,
        "db_bytes_largest": largest.stat().st_size,
    }


def prefill_baseline(cache: Path, sizes: list[int], devices: int) -> dict[int, Path]:
    """Snapshots ``cache/baseline-<n>/`` (persist-queue directories) with n readings each."""
    from bench import naive  # noqa: PLC0415

    sims = _sims(devices)
    snaps: dict[int, Path] = {}
    for size in sorted(set(sizes)):
        d = cache / f"baseline-{size}"
        if d.exists():
            shutil.rmtree(d)
        readings = []
        for k in range(size):
            i = k % devices
            code, aim = sims[i].code(k // devices + 1)
            readings.append(
                naive.to_reading(f"scan{i + 1}", k // devices + 1, sims[i].frame(aim + code))
            )
        naive.prefill(d, readings)
        snaps[size] = d
    return snaps
