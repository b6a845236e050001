"""The README's demo line, end to end: one of every device family, a station, the real daemon."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.harness import ROOT


def test_demo_line_every_device_family_arrives() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "edge_agent", "demo", "--seconds", "8", "--rate", "2"],
        capture_output=True, text=True, cwd=ROOT, timeout=120, check=False,
    )  # fmt: skip
    out = res.stdout
    assert res.returncode == 0, out[-3000:] + res.stderr[-3000:]
    emitted = int(re.search(r"readings emitted by the simulators : (\d+)", out).group(1))  # type: ignore[union-attr]
    received = int(re.search(r"readings received by the backend   : (\d+)", out).group(1))  # type: ignore[union-attr]
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
