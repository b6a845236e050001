"""toledo_continuous: contract on a real pty, captures, properties, settling, faults, replugs."""

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
from drivers.toledo_continuous import (
    MASK7,
    ToledoContinuousConfig,
    ToledoContinuousDriver,
    ToledoFramer,
    parse_frame,
)
from edge_agent.errors import DeviceIOError, FrameError
from edge_agent.reading import Kind
from simulators._scale_model import Display, Sample, Timing
from simulators.pty_port import PtyPort
from simulators.toledo_continuous import ToledoSim, ToledoSimConfig
from tests.drivers.contract import DriverContract, Rig, read_until, reopen

CAPTURES = Path(__file__).parent.parent / "data" / "captures" / "toledo_continuous"
FAST = Timing(empty_s=(0.3, 0.5), motion_s=(0.3, 0.6), hold_s=(0.5, 0.8), unload_s=(0.1, 0.2))
Make = Callable[..., tuple[ToledoSim, ToledoContinuousDriver]]


def cfg(**kw: object) -> ToledoContinuousConfig:
    base = {"type": "toledo_continuous", "port": "loop://", "max_capacity_g": 30000}
    return ToledoContinuousConfig.model_validate({**base, **kw})


@pytest.fixture
def scale(tmp_path: Path) -> Iterator[Make]:
    """Factory: an indicator simulator on a pty behind a symlink, and a driver for it."""
    made: list[tuple[ToledoSim, ToledoContinuousDriver]] = []

    def make(faults: dict[str, float] | None = None, auto: bool = False, seed: int = 1,
             sim_kw: dict[str, Any] | None = None,
             **drv_kw: object) -> tuple[ToledoSim, ToledoContinuousDriver]:  # fmt: skip
        port = PtyPort(tmp_path / f"indicator{len(made)}")
        port.plug()
        sim_cfg = ToledoSimConfig(auto=auto, timing=FAST, rate=20.0, seed=seed, faults=faults or {},
                                  **sim_kw or {})  # fmt: skip
        sim = ToledoSim(port, sim_cfg)
        drv = ToledoContinuousDriver("ind1", cfg(port=str(port.link), **drv_kw))
        made.append((sim, drv))
        return sim, drv

    yield make
    for sim, drv in made:
        drv.close()
        sim.stop()
        sim.port.close()


def place(sim: ToledoSim, grams: float) -> float:
    """Put a settled load on the simulated platform; returns the grams it will show."""
    return sim.cfg.display.grams(sim.model.place(grams, settle=False))


def replug(sim: Any) -> None:
    """Plug back in with the platform emptied meanwhile: a streaming scale must not show the
    last cycle's load after the reopen (it would be published again: the settle filter is per
    connection)."""
    sim.model.place(0, settle=False)
    sim.port.plug()


class TestContract(DriverContract):
    @pytest.fixture
    def rig(self, scale: Make) -> Rig:
        sim, drv = scale()
        sim.start()
        loads = iter(range(1000, 29_000, 487))  # 57 loads: the contract needs 54

        def garbled() -> str:
            sim.inject("garble")
            return "checksum"

        return Rig(drv, lambda: place(sim, next(loads)), garbled, sim.port.unplug,
                   lambda: replug(sim), clean_replugs=False)  # fmt: skip


def _events(c: ToledoContinuousConfig, data: bytes, bytewise: bool) -> list[dict[str, object]]:
    framer = ToledoFramer(c)
    chunks = [data[i : i + 1] for i in range(len(data))] if bytewise else [data]
    events = [ev for ch in chunks for ev in framer.feed(ch.translate(MASK7), 0.0)]
    out: list[dict[str, object]] = []
    for ev in [*events, *framer.expire(10.0)]:
        if isinstance(ev, Reject):
            out.append({"reject": ev.reason})
            continue
        try:
            d = parse_frame(ev, c)
        except FrameError as err:
            out.append({"reject": err.reason})
            continue
        assert d.kind is Kind.WEIGHT and d.raw == ev
        assert d.check == ("checksum" if c.checksum else "none")
        out.append({"value": d.value, "unit": d.unit, "stable": d.stable})
    return out


@pytest.mark.parametrize("case", sorted(p.stem for p in CAPTURES.glob("*.bin")))
@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "byte-at-a-time"])
def test_capture(case: str, bytewise: bool) -> None:
    spec = json.loads((CAPTURES / f"{case}.json").read_text())
    data = (CAPTURES / f"{case}.bin").read_bytes()
    assert _events(cfg(**spec["config"]), data, bytewise) == spec["expected"]


def test_a_late_reader_does_not_cut_a_frame_only_observed_silence_does() -> None:
    frame = bytes.fromhex("02 2D 30 20 30 30 31 32 33 34 30 30 30 30 30 30 0D 2A")
    late = ToledoFramer(cfg())
    assert late.feed(frame[:5], 0.0) == []
    assert late.feed(frame[5:], 0.5) == [frame]  # read 0.5 s later, no empty read between
    quiet = ToledoFramer(cfg())
    assert quiet.feed(frame[:5], 0.0) == []
    assert quiet.expire(0.5) == [Reject("partial", frame[:5])]  # an empty read saw the silence


CONFIGS = [cfg(), cfg(checksum=False), cfg(tare_field=False), cfg(max_capacity_g=1, min_weight_g=0)]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=12), st.sampled_from(CONFIGS))
def test_arbitrary_bytes_raise_only_frame_errors(
    chunks: list[bytes], c: ToledoContinuousConfig
) -> None:
    framer = ToledoFramer(c)
    frames = [ev for ch in chunks for ev in framer.feed(ch.translate(MASK7), 0.0)]
    assert all(len(ev) == c.frame_length for ev in frames if isinstance(ev, bytes))
    for blob in [*chunks, *(ev for ev in frames if isinstance(ev, bytes))]:
        with contextlib.suppress(FrameError):  # anything else fails the test
            parse_frame(blob, c)


ENCODER = ToledoSim(PtyPort(), ToledoSimConfig(auto=False, display=Display("kg", 3, 5)))


@settings(max_examples=200, deadline=None)
@given(st.integers(-6000, 6000).map(lambda n: n * 5), st.booleans(), st.lists(st.integers(1, 17)))
def test_any_frame_decodes_the_same_however_it_is_split(
    counts: int, stable: bool, cuts: list[int]
) -> None:
    frame = ENCODER.frame(Sample(counts, stable, 1, over=False, under=False, net=False))
    edges = sorted(cuts)
    pieces = [frame[a:b] for a, b in zip([0, *edges], [*edges, len(frame)], strict=True)]
    framer = ToledoFramer(cfg())
    events = [ev for p in pieces for ev in framer.feed(p, 0.0)]
    assert events == [frame]
    d = parse_frame(frame, cfg())
    assert (d.value, d.unit, d.stable) == (float(counts), "kg", stable)


def _drain(sim: ToledoSim, drv: ToledoContinuousDriver, seconds: float) -> list[tuple[object, ...]]:
    got: list[tuple[object, ...]] = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        if (d := drv.read(0.1)) is not None:
            got.append((d.value, d.unit, d.stable))
    sim.stop()
    while (d := drv.read(0.4)) is not None:
        got.append((d.value, d.unit, d.stable))
    return got


def test_motion_never_returned_settled_weights_once_each(scale: Make) -> None:
    sim, drv = scale(auto=True, seed=11)
    drv.open()
    sim.start()
    got = _drain(sim, drv, 5.0)
    want = [(t.grams, t.unit, True) for t in sim.settled()]
    assert got == want, (got, want, dict(drv.rejects), Counter(t.kind for t in sim.truth))
    assert len(got) >= 3, sim.truth
    kinds = Counter(t.kind for t in sim.truth if t.delivered)
    assert drv.motion == kinds["motion"] > 0  # every motion frame seen, none returned
    assert drv.below_min + drv.repeats + len(got) == kinds["weight"]
    assert not drv.rejects


def test_faults_are_counted_by_reason_and_good_frames_survive(scale: Make) -> None:
    faults = {"noise": 0.08, "garble": 0.08, "partial": 0.05, "fragment": 0.3, "coalesce": 0.2,
              "overload": 0.3}  # fmt: skip
    sim, drv = scale(faults, auto=True, seed=15)
    drv.open()
    sim.start()
    got = _drain(sim, drv, 6.0)
    want = [(t.grams, t.unit, True) for t in sim.settled()]
    assert got == want, (got, want, dict(drv.rejects), Counter(t.kind for t in sim.truth))
    assert len(got) >= 2, sim.truth
    truth = Counter(t.kind for t in sim.truth if t.delivered)
    for reason in ("checksum", "noise", "partial", "over_capacity"):
        assert drv.rejects[reason] == truth[reason] > 0, (reason, dict(drv.rejects), truth)


def test_stalled_stream_raises_io_error_then_resumes(scale: Make) -> None:
    sim, drv = scale(stall_timeout_ms=300, sim_kw={"stall_s": 1.0})
    sim.start()
    drv.open()
    assert read_until(drv, 1.0) is None  # empty platform: streaming, nothing to publish
    sim.inject("stall")
    t0 = time.monotonic()
    with pytest.raises(DeviceIOError, match="no data"):
        while time.monotonic() - t0 < 3:
            drv.read(0.1)
    # the silence counts from the last frame (before the stall was injected), not from t0: the
    # watchdog fires on its deadline, neither early nor a poll interval late
    assert 0.3 <= time.monotonic() - drv.last_rx < 0.6 and time.monotonic() - t0 < 1.0
    drv.close()
    time.sleep(1.0)  # the indicator streams again (as the supervisor's reopen would find it)
    drv.open()
    want = place(sim, 4321)
    d = read_until(drv, 3.0)
    assert d is not None and d.value == want


def test_power_up_flag_after_replug_is_rejected_as_not_zeroed(scale: Make) -> None:
    sim, drv = scale({"powerup": 1.0}, sim_kw={"powerup_frames": 6})
    sim.start()
    drv.open()
    sim.unplug(0.1)
    reopen(drv)
    want = place(sim, 777)
    d = read_until(drv, 3.0)
    assert d is not None and d.value == want
    assert drv.rejects["not_zeroed"] == 6 == Counter(t.kind for t in sim.truth)["not_zeroed"]


def test_registry_and_config_checks() -> None:
    assert cfg().frame_length == 18 and cfg(tare_field=False, checksum=False).frame_length == 11
    with pytest.raises(ValidationError, match="max_capacity_g"):
        ToledoContinuousConfig.model_validate({"type": "toledo_continuous", "port": "loop://"})
    with pytest.raises(ValidationError, match="min_weight_g"):
        cfg(min_weight_g=50, max_capacity_g=40)
    with pytest.raises(ValidationError, match="stable name"):
        cfg(port="/dev/ttyUSB0")
