"""The scale simulators' garble fault on the shortest frames a scale sends."""

from __future__ import annotations

from pathlib import Path

from simulators.pty_port import PtyPort
from simulators.sma_scale import SmaSim, SmaSimConfig


def test_garble_of_a_three_byte_reply_flips_its_one_payload_byte(tmp_path: Path) -> None:
    port = PtyPort(tmp_path / "sma")
    try:
        sim = SmaSim(port, SmaSimConfig(seed=3))
        for _ in range(20):  # any seed: the only byte that may be garbled is the '?'
            frame, reason = sim.garble(b"\n?\r")
            assert (frame, reason) == (b"\n\xbf\r", "garbled")
    finally:
        port.close()
