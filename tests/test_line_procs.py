"""The line processes of ``simulators.fleet_lines``: one line served and driven in a child
process, its result equal to what the parent rebuilds from the config; a failing child fails
the caller at once instead of hanging it."""

from __future__ import annotations

import os
import re
import select
import socket
import threading
import time
from pathlib import Path

import pytest

from simulators.line import LineConfig, LineSim
from simulators.line.devices import wire_readings
from simulators.line.procs import LineProcError, LineProcs


def host(toml: str, stop: threading.Event) -> threading.Thread:
    """An agent's stand-in: opens every device port of ``toml`` and reads whatever comes."""
    fds: list[int] = []
    socks: list[socket.socket] = []
    for port in re.findall(r'^port = "(.*)"$', toml, re.M):
        if port.startswith("socket://"):
            host_, _, n = port.removeprefix("socket://").partition(":")
            socks.append(socket.create_connection((host_, int(n))))
        else:
            fds.append(os.open(port, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY))

    def drain() -> None:
        while not stop.is_set():
            ready, _, _ = select.select([*fds, *(x.fileno() for x in socks)], [], [], 0.05)
            for fd in ready:
                os.read(fd, 4096)
        for fd in fds:
            os.close(fd)
        for sock in socks:
            sock.close()

    t = threading.Thread(target=drain, daemon=True)
    t.start()
    return t


def test_a_line_in_a_child_writes_its_truth(tmp_path: Path) -> None:
    cfg = LineConfig(rate_per_h=6000, duration_s=3, seed=7, window_ms=400,
                     node=("S1", "L7", "line-07"))  # fmt: skip
    procs = LineProcs([("line-07", tmp_path, cfg)], tmp_path / "spec.json", tmp_path / "log")
    stop = threading.Event()
    try:
        toml = procs.ready(30)["line-07"]
        assert "[devices.tunnel_1]" in toml
        assert "[stations.st1]" in toml
        reader = host(toml, stop)
        procs.go(time.time() + 0.2, {"line-07": 0.1})
        res = procs.done(30)["line-07"]
    finally:
        stop.set()
        procs.stop()
    reader.join(5)
    assert procs.proc.returncode == 0
    readings = list(LineSim(cfg).readings())  # deterministic: the parent's own truth
    assert set(res.by_id) == {r["id"] for r in readings}
    wire = wire_readings(readings)
    assert sum(len(w) for w in res.written.values()) == len(wire)
    assert [v for _, _, v in res.written["scale_1"]] == [
        r["value"] for r in wire if r["device"] == "scale_1"
    ]
    assert res.slips
    assert max(res.slips) < 1000  # a host reads the ports: nothing waits for a reader


def test_a_child_that_dies_fails_the_caller(tmp_path: Path) -> None:
    cfg = LineConfig(duration_s=3, window_ms=400)
    bad = tmp_path / "missing" / "dir"  # the pty symlinks cannot be made: the child exits
    procs = LineProcs([("line-01", bad, cfg)], tmp_path / "spec.json", tmp_path / "log")
    t0 = time.monotonic()
    with pytest.raises(LineProcError, match="exited"):
        procs.ready(30)
    assert time.monotonic() - t0 < 20
    procs.stop()


def test_a_silent_child_times_out(tmp_path: Path) -> None:
    cfg = LineConfig(duration_s=3, window_ms=400)
    procs = LineProcs([("line-01", tmp_path, cfg)], tmp_path / "spec.json", tmp_path / "log")
    try:
        procs.ready(30)
        with pytest.raises(LineProcError, match="no 'done' within"):
            procs.done(0.5)  # no go sent: it never finishes
    finally:
        procs.stop()
