"""The README's demo line, end to end: one of every device family, a station, the real daemon."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from simulators.mosquitto import Mosquitto
from tests.harness import ROOT, Subscriber


def found(pattern: str, out: str) -> str:
    """The first group of ``pattern`` in the demo's output (which must have it)."""
    m = re.search(pattern, out)
    assert m, (pattern, out[-3000:])
    return m.group(1)


def test_demo_line_every_device_family_arrives() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "edge_agent", "demo", "--seconds", "8", "--rate", "2"],
        capture_output=True, text=True, cwd=ROOT, timeout=120, check=False,
    )  # fmt: skip
    out = res.stdout
    assert res.returncode == 0, out[-3000:] + res.stderr[-3000:]
    emitted = int(found(r"readings emitted by the simulators : (\d+)", out))
    received = int(found(r"readings received by the backend   : (\d+)", out))
    assert emitted > 50 and received >= emitted
    for device in (
        "handheld_1",
        "tunnel_sick_1",
        "tunnel_cognex_1",
        "tunnel_datalogic_1",
        "hand_pos_1",
        "scale_sics_1",
        "scale_toledo_1",
        "bus_1",
        "tcp_1",
    ):
        assert f"/reading/{device} " in out or f"/batch [{device}]" in out, device
    assert "/parcel/induct_1" in out


def _demo_processes(rundir: str) -> list[str]:
    """Command lines of live processes that mention ``rundir`` (the agent, the broker)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if rundir in cmdline:
            found.append(f"{proc.name}: {cmdline}")
    return found


def test_demo_runs_twice_from_fresh_state_and_leaves_nothing(tmp_path: Path) -> None:
    """Each run: its own temp dir, seq from 1, its own broker; nothing left afterwards.

    A broker "left behind by an earlier run" listens on the port the config names: the demo
    must start its own on another port, and publish nothing to the leftover one.
    """
    leftover = Mosquitto(tmp_path / "leftover")
    leftover.start()
    spy = Subscriber(leftover.port, topic="#", client_id="spy")
    config = tmp_path / "demo.toml"
    text = (ROOT / "config" / "demo.toml").read_text()
    config.write_text(text.replace("port = 18830", f"port = {leftover.port}"))
    try:
        for run in (1, 2):
            res = subprocess.run(
                [sys.executable, "-m", "edge_agent", "demo", "-c", str(config),
                 "--seconds", "3", "--quiet"],
                capture_output=True, text=True, cwd=ROOT, timeout=120, check=False,
            )  # fmt: skip
            out = res.stdout
            assert res.returncode == 0, f"run {run}: " + out[-3000:] + res.stderr[-3000:]
            rundir = found(r"demo: fresh state in (\S+)", out)
            port = int(found(r"Mosquitto started on 127\.0\.0\.1:(\d+)", out))
            assert port != leftover.port
            assert "first seq of every device          : 1\n" in out, out
            received = re.search(r"readings received by the backend   : (\d+)", out)
            assert received and int(received.group(1)) > 20, out
            exceptions = re.search(r"station exceptions +: (.*)", out)
            assert exceptions and "device_offline" not in exceptions.group(1), out
            assert not Path(rundir).exists(), f"run {run} left {rundir}"
            assert _demo_processes(rundir) == [], f"run {run} left processes behind"
            assert "edge-agent-usb-sim-" not in out + res.stderr  # the USB sim lives in rundir
        assert spy.messages == [], "the demo published to a broker it did not start"
    finally:
        spy.close()
        leftover.stop()


def test_broker_refuses_a_port_something_listens_on(tmp_path: Path) -> None:
    first = Mosquitto(tmp_path / "a")
    first.start()
    try:
        with pytest.raises(RuntimeError, match="already in use"):
            Mosquitto(tmp_path / "b", port=first.port).start()
    finally:
        first.stop()
    second = Mosquitto(tmp_path / "b", port=first.port)
    second.start()  # free again once the first is gone
    second.stop()
