"""sma_scale: contract (polled and continuous) on a real pty, captures, properties, replugs."""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from drivers.common.framing import Reject
from drivers.sma_scale import LfCrFramer, SmaScaleConfig, SmaScaleDriver, parse_frame
from edge_agent.errors import DeviceIOError, FrameError
from edge_agent.reading import Kind
from simulators._scale_model import Timing
from simulators.pty_port import PtyPort
from simulators.sma_scale import SmaSim, SmaSimConfig
from tests.drivers.contract import DriverContract, Rig, read_until

CAPTURES = Path(__file__).parent.parent / "data" / "captures" / "sma_scale"
FAST = Timing(empty_s=(0.3, 0.5), motion_s=(0.3, 0.6), hold_s=(0.5, 0.8), unload_s=(0.1, 0.2))
Make = Callable[..., tuple[SmaSim, SmaScaleDriver]]


def cfg(**kw: object) -> SmaScaleConfig:
    base = {"type": "sma_scale", "port": "loop://", "max_capacity_g": 30000}
    return SmaScaleConfig.model_validate({**base, **kw})


@pytest.fixture
def scale(tmp_path: Path) -> Iterator[Make]:
    """Factory: an SMA simulator on a pty behind a symlink (started), and a driver."""
    made: list[tuple[SmaSim, SmaScaleDriver]] = []

    def make(faults: dict[str, float] | None = None, auto: bool = False, seed: int = 1,
             **drv_kw: object) -> tuple[SmaSim, SmaScaleDriver]:  # fmt: skip
        port = PtyPort(tmp_path / f"sma{len(made)}")
        port.plug()
        sim_cfg = SmaSimConfig(auto=auto, timing=FAST, rate=20.0, seed=seed, faults=faults or {})
        sim = SmaSim(port, sim_cfg)
        sim.start()
        drv = SmaScaleDriver("sma1", cfg(port=str(port.link), **{"poll_interval_ms": 50, **drv_kw}))
        made.append((sim, drv))
        return sim, drv

    yield make
    for sim, drv in made:
        drv.close()
        sim.stop()
        sim.port.close()


def place(sim: SmaSim, grams: float) -> float:
    """Put a settled load on the simulated platform; returns the grams it will show."""
    return sim.cfg.display.grams(sim.model.place(grams, settle=False))


def replug(sim: Any) -> None:
    """Plug back in with the platform emptied meanwhile: a streaming scale must not show the
    last cycle's load after the reopen (it would be published again: the settle filter is per
    connection)."""
    sim.model.place(0, settle=False)
    sim.port.plug()


class TestContract(DriverContract):
    @pytest.fixture(params=["poll", "continuous"])
    def rig(self, request: pytest.FixtureRequest, scale: Make) -> Rig:
        sim, drv = scale(mode=request.param)
        loads = iter(range(1000, 29_000, 487))  # 57 loads: the contract needs 54

        def garbled() -> str:
            sim.inject("garble")
            return "garbled"

        return Rig(drv, lambda: place(sim, next(loads)), garbled, sim.port.unplug,
                   lambda: replug(sim), clean_replugs=False)  # fmt: skip


def _events(c: SmaScaleConfig, data: bytes, bytewise: bool) -> list[dict[str, object]]:
    framer = LfCrFramer(32, 0.1)
    chunks = [data[i : i + 1] for i in range(len(data))] if bytewise else [data]
    out: list[dict[str, object]] = []
    for ev in [*(e for ch in chunks for e in framer.feed(ch, 0.0)), *framer.expire(10.0)]:
        if isinstance(ev, Reject):
            out.append({"reject": ev.reason})
            continue
        try:
            d = parse_frame(ev, c)
        except FrameError as err:
            out.append({"reject": err.reason})
            continue
        assert d.kind is Kind.WEIGHT and d.raw == ev and d.check == "none"
        out.append({"value": d.value, "unit": d.unit, "stable": d.stable})
    return out


@pytest.mark.parametrize("case", sorted(p.stem for p in CAPTURES.glob("*.bin")))
@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "byte-at-a-time"])
def test_capture(case: str, bytewise: bool) -> None:
    spec = json.loads((CAPTURES / f"{case}.json").read_text())
    data = (CAPTURES / f"{case}.bin").read_bytes()
    assert _events(cfg(**spec["config"]), data, bytewise) == spec["expected"]


def test_a_late_reader_does_not_cut_a_frame_only_observed_silence_does() -> None:
    frame = b"\n 1G       1.234kg \r"
    late = LfCrFramer(32, 0.1)
    assert late.feed(frame[:5], 0.0) == []
    assert late.feed(frame[5:], 0.5) == [frame]  # read 0.5 s later, no empty read between
    quiet = LfCrFramer(32, 0.1)
    assert quiet.feed(frame[:5], 0.0) == []
    assert quiet.expire(0.5) == [Reject("partial", frame[:5])]  # an empty read saw the silence


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=12), st.binary(min_size=18, max_size=18))
def test_arbitrary_bytes_raise_only_frame_errors(chunks: list[bytes], body: bytes) -> None:
    framer = LfCrFramer(32, 0.1)
    frames = [ev for ch in chunks for ev in framer.feed(ch, 0.0) if isinstance(ev, bytes)]
    for blob in [*chunks, *frames, b"\n" + body + b"\r"]:
        with contextlib.suppress(FrameError):  # anything else fails the test
            parse_frame(blob, cfg())


def _drain(sim: SmaSim, drv: SmaScaleDriver, seconds: float) -> list[tuple[object, ...]]:
    got: list[tuple[object, ...]] = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        if (d := drv.read(0.1)) is not None:
            got.append((d.value, d.unit, d.stable))
    sim.stop()
    while (d := drv.read(0.5)) is not None:
        got.append((d.value, d.unit, d.stable))
    return got


@pytest.mark.parametrize("mode", ["poll", "continuous"])
def test_motion_never_returned_settled_weights_once_each(scale: Make, mode: str) -> None:
    sim, drv = scale(auto=True, seed=11, mode=mode)
    drv.open()
    got = _drain(sim, drv, 4.5)
    want = [(t.grams, t.unit, True) for t in sim.settled()]
    assert got == want, (got, want, dict(drv.rejects), Counter(t.kind for t in sim.truth))
    assert len(got) >= 2, sim.truth
    kinds = Counter(t.kind for t in sim.truth if t.delivered)
    assert drv.motion == kinds["motion"] > 0  # every M frame seen, none returned
    assert drv.below_min + drv.repeats + len(got) == kinds["weight"]
    assert not drv.rejects
    if mode == "poll":
        assert drv.polls - 1 <= sim.commands.count(b"W") <= drv.polls
    else:
        assert sim.commands == [b"R"] and drv.polls == 0


@pytest.mark.parametrize("mode", ["poll", "continuous"])
def test_faults_are_counted_by_reason_and_good_frames_survive(scale: Make, mode: str) -> None:
    faults = {"noise": 0.08, "garble": 0.08, "partial": 0.05, "fragment": 0.3, "coalesce": 0.2,
              "unknown": 0.04, "zero_error": 0.04, "overload": 0.3, "underload": 0.5}  # fmt: skip
    sim, drv = scale(faults, auto=True, seed=8, mode=mode)
    drv.open()
    got = _drain(sim, drv, 6.0)
    want = [(t.grams, t.unit, True) for t in sim.settled()]
    assert got == want, (got, want, dict(drv.rejects), Counter(t.kind for t in sim.truth))
    assert len(got) >= 2, sim.truth
    truth = Counter(t.kind for t in sim.truth if t.delivered)
    replies = ("unknown_command", "zero_error") if mode == "poll" else ()  # answers to polls
    for reason in ("garbled", "noise", "partial", "over_capacity", "under_range", *replies):
        assert drv.rejects[reason] == truth[reason] > 0, (reason, dict(drv.rejects), truth)
    assert drv.rejects["no_reply"] == 0


def test_q_command_waits_for_stability_and_dashes_on_timeout(scale: Make) -> None:
    sim, drv = scale(poll_command="Q", reply_timeout_ms=3000)
    sim.cfg.q_timeout_s = 2.0
    drv.open()
    sim.model.place(1500, settle=True)  # moving for 0.3-0.6 s: Q answers once stable
    assert (d := read_until(drv)) is not None and d.value == 1500.0
    assert drv.motion == 0 and not drv.rejects and set(sim.commands) == {b"Q"}
    sim.cfg.q_timeout_s = 0.05  # shorter than the motion: dashes first, then the weight
    sim.model.place(2500, settle=True)
    assert (d := read_until(drv)) is not None and d.value == 2500.0
    assert drv.rejects["no_weight"] >= 1 and drv.rejects["no_reply"] == 0


def test_unanswered_polls_and_a_silent_stream_raise(tmp_path: Path) -> None:
    port = PtyPort(tmp_path / "silent")
    port.plug()
    polled = SmaScaleDriver("sma1", cfg(port=str(port.link), poll_interval_ms=20,
                                        reply_timeout_ms=100, max_missed=3))  # fmt: skip
    polled.open()
    with pytest.raises(DeviceIOError, match="no reply to 3 polls"):
        for _ in range(40):
            polled.read(0.1)
    assert polled.rejects["no_reply"] == 3
    polled.close()
    assert port.read() == b"\nW\r" * 3
    stream = SmaScaleDriver("sma2", cfg(port=str(port.link), mode="continuous",
                                        continuous_command="", stall_timeout_ms=300))  # fmt: skip
    stream.open()
    t0 = time.monotonic()
    with pytest.raises(DeviceIOError, match="no data"):
        for _ in range(40):
            stream.read(0.1)
    assert 0.3 <= time.monotonic() - t0 < 1.0 and port.read() == b""  # nothing sent
    stream.close()
    port.close()


def test_registry_and_config_checks() -> None:
    with pytest.raises(ValidationError, match="max_capacity_g"):
        SmaScaleConfig.model_validate({"type": "sma_scale", "port": "loop://"})
    with pytest.raises(ValidationError, match="min_weight_g"):
        cfg(min_weight_g=50, max_capacity_g=40)
    with pytest.raises(ValidationError, match="mode"):
        cfg(mode="stream")
