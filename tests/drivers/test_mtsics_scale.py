"""mtsics_scale: contract on a real pty, captures, properties, polling, zero/tare, replugs."""

from __future__ import annotations

import contextlib
import json
import threading
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
from drivers.mtsics_scale import MtSicsScaleConfig, MtSicsScaleDriver, SicsFramer, parse_frame
from edge_agent.errors import DeviceIOError, FrameError
from edge_agent.reading import Kind
from simulators._scale_model import Timing
from simulators.mtsics_scale import MtSicsSim, MtSicsSimConfig
from simulators.pty_port import PtyPort
from tests.drivers.contract import DriverContract, Rig, read_until

CAPTURES = Path(__file__).parent.parent / "data" / "captures" / "mtsics_scale"
FAST = Timing(empty_s=(0.3, 0.5), motion_s=(0.3, 0.6), hold_s=(0.5, 0.8), unload_s=(0.1, 0.2))
Make = Callable[..., tuple[MtSicsSim, MtSicsScaleDriver]]


def cfg(**kw: object) -> MtSicsScaleConfig:
    base = {"type": "mtsics_scale", "port": "loop://", "max_capacity_g": 30000}
    return MtSicsScaleConfig.model_validate({**base, **kw})


@pytest.fixture
def scale(tmp_path: Path) -> Iterator[Make]:
    """Factory: an MT-SICS simulator on a pty behind a symlink (started), and a driver."""
    made: list[tuple[MtSicsSim, MtSicsScaleDriver]] = []

    def make(faults: dict[str, float] | None = None, auto: bool = False, seed: int = 1,
             **drv_kw: object) -> tuple[MtSicsSim, MtSicsScaleDriver]:  # fmt: skip
        port = PtyPort(tmp_path / f"balance{len(made)}")
        port.plug()
        sim_cfg = MtSicsSimConfig(auto=auto, timing=FAST, seed=seed, faults=faults or {})
        sim = MtSicsSim(port, sim_cfg)
        sim.start()
        drv_kw = {"poll_interval_ms": 50, **drv_kw}
        drv = MtSicsScaleDriver("bal1", cfg(port=str(port.link), **drv_kw))
        made.append((sim, drv))
        return sim, drv

    yield make
    for sim, drv in made:
        drv.close()
        sim.stop()
        sim.port.close()


def place(sim: MtSicsSim, grams: float) -> float:
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
        loads = iter(range(1000, 29_000, 487))  # 57 loads: the contract needs 54

        def garbled() -> str:
            sim.inject("garble")
            return "garbled"

        return Rig(drv, lambda: place(sim, next(loads)), garbled, sim.port.unplug,
                   lambda: replug(sim), clean_replugs=False)  # fmt: skip


def _events(c: MtSicsScaleConfig, data: bytes, bytewise: bool) -> list[dict[str, object]]:
    framer = SicsFramer(0.1)
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
    frame = b"S S      1.234 kg\r\n"
    late = SicsFramer(0.1)
    assert late.feed(frame[:5], 0.0) == []
    assert late.feed(frame[5:], 0.5) == [frame]  # read 0.5 s later, no empty read between
    quiet = SicsFramer(0.1)
    assert quiet.feed(frame[:5], 0.0) == []
    assert quiet.expire(0.5) == [Reject("partial", frame[:5])]  # an empty read saw the silence


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=12))
def test_arbitrary_bytes_raise_only_frame_errors(chunks: list[bytes]) -> None:
    framer = SicsFramer(0.1)
    frames = [ev for ch in chunks for ev in framer.feed(ch, 0.0) if isinstance(ev, bytes)]
    for blob in [*chunks, *frames, *(b"S S " + ch + b"\r\n" for ch in chunks)]:
        with contextlib.suppress(FrameError):  # anything else fails the test
            parse_frame(blob, cfg())


def _drain(sim: MtSicsSim, drv: MtSicsScaleDriver, seconds: float) -> list[tuple[object, ...]]:
    got: list[tuple[object, ...]] = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        if (d := drv.read(0.1)) is not None:
            got.append((d.value, d.unit, d.stable))
    sim.stop()
    while (d := drv.read(0.5)) is not None:
        got.append((d.value, d.unit, d.stable))
    return got


def test_motion_never_returned_settled_weights_once_each(scale: Make) -> None:
    sim, drv = scale(auto=True, seed=11)
    drv.open()
    got = _drain(sim, drv, 5.0)
    want = [(t.grams, t.unit, True) for t in sim.settled()]
    assert got == want, (got, want, dict(drv.rejects), Counter(t.kind for t in sim.truth))
    assert len(got) >= 3, sim.truth
    kinds = Counter(t.kind for t in sim.truth if t.delivered)
    assert drv.motion == kinds["motion"] > 0  # every S D seen, none returned
    assert drv.below_min + drv.repeats + len(got) == kinds["weight"]
    assert drv.polls - 1 <= sim.commands.count(b"SI") <= drv.polls  # the last may follow stop()
    assert not drv.rejects


def test_s_command_waits_for_stability(scale: Make) -> None:
    sim, drv = scale(auto=True, seed=12, poll_command="S", reply_timeout_ms=4000)
    drv.open()
    got = _drain(sim, drv, 4.0)
    want = [(t.grams, t.unit, True) for t in sim.settled()]
    assert got == want, (got, want, dict(drv.rejects), Counter(t.kind for t in sim.truth))
    assert len(got) >= 2, sim.truth
    assert drv.motion == 0 and set(sim.commands) == {b"S"} and not drv.rejects


def test_faults_are_counted_by_reason_and_good_replies_survive(scale: Make) -> None:
    faults = {"noise": 0.08, "garble": 0.08, "partial": 0.04, "fragment": 0.3, "busy": 0.04,
              "error": 0.04, "overload": 0.3}  # fmt: skip
    sim, drv = scale(faults, auto=True, seed=14)
    drv.open()
    got = _drain(sim, drv, 7.0)
    want = [(t.grams, t.unit, True) for t in sim.settled()]
    assert got == want, (got, want, dict(drv.rejects), Counter(t.kind for t in sim.truth))
    assert len(got) >= 2, sim.truth
    truth = Counter(t.kind for t in sim.truth if t.delivered)
    for reason in ("garbled", "noise", "partial", "not_executable", "transmission_error",
                   "over_capacity"):  # fmt: skip
        assert drv.rejects[reason] == truth[reason] > 0, (reason, dict(drv.rejects), truth)
    assert drv.rejects["no_reply"] == 0


def _wire(port: PtyPort, until: bytes, timeout: float = 2.0) -> bytes:
    buf = b""
    deadline = time.monotonic() + timeout
    while until not in buf and time.monotonic() < deadline:
        buf += port.read()
        time.sleep(0.005)
    return buf


@pytest.mark.parametrize(("method", "cmd", "reply", "status"), [
    ("zero", b"Z\r\n", b"Z A\r\n", "A"), ("zero", b"Z\r\n", b"Z I\r\n", "I"),
    ("tare", b"T\r\n", b"T S      0.500 kg\r\n", "S"), ("tare", b"T\r\n", b"T +\r\n", "+"),
])  # fmt: skip
def test_zero_and_tare_bytes_on_the_wire(
    tmp_path: Path, method: str, cmd: bytes, reply: bytes, status: str
) -> None:
    port = PtyPort(tmp_path / "raw")
    port.plug()
    drv = MtSicsScaleDriver("bal1", cfg(port=str(port.link), poll_interval_ms=60_000))
    drv.open()
    result: dict[str, str] = {}
    caller = threading.Thread(target=lambda: result.update(status=getattr(drv, method)(3.0)))
    caller.start()
    wire = _wire(port, cmd)
    port.write(b"S S      1.250 kg\r\n" + reply)  # a poll reply first, as the device orders them
    caller.join(5)
    assert result == {"status": status}
    assert wire.startswith(cmd) and wire.count(cmd) == 1, wire
    assert wire + _wire(port, b"\n", 0.2) in (cmd, cmd + b"SI\r\n")  # at most one poll meanwhile
    d = drv.read(0.3)  # the weight read while waiting for the command's reply is kept
    assert d is not None and d.value == 1250.0
    with pytest.raises(DeviceIOError, match="no reply to"):
        drv.zero(0.3)
    drv.close()
    port.close()


def test_zero_and_tare_change_what_the_scale_shows(scale: Make) -> None:
    sim, drv = scale()
    drv.open()
    want = place(sim, 2000)
    assert (d := read_until(drv)) is not None and d.value == want
    assert drv.tare() == "S" and sim.commands[-1:] == [b"T"]
    assert read_until(drv, 0.6) is None  # net 0: below min_weight_g
    place(sim, 2500)
    assert (d := read_until(drv)) is not None and d.value == 500.0  # net of the 2 kg tare
    assert drv.zero() == "+" and sim.commands[-1:] == [b"Z"]  # 2.5 kg gross: outside ±2 % Max
    place(sim, 0)
    assert drv.zero() == "A"


def test_unanswered_polls_are_counted_then_raise(tmp_path: Path) -> None:
    port = PtyPort(tmp_path / "silent")
    port.plug()
    drv = MtSicsScaleDriver("bal1", cfg(port=str(port.link), poll_interval_ms=20,
                                        reply_timeout_ms=100, max_missed=3))  # fmt: skip
    drv.open()
    t0 = time.monotonic()
    with pytest.raises(DeviceIOError, match="no reply to 3 polls"):
        for _ in range(40):
            drv.read(0.1)
    assert 0.3 <= time.monotonic() - t0 < 1.0
    assert drv.rejects["no_reply"] == 3 and _wire(port, b"never", 0.1) == b"SI\r\n" * 3
    drv.close()
    port.close()


def test_registry_and_config_checks() -> None:
    with pytest.raises(ValidationError, match="max_capacity_g"):
        MtSicsScaleConfig.model_validate({"type": "mtsics_scale", "port": "loop://"})
    with pytest.raises(ValidationError, match="min_weight_g"):
        cfg(min_weight_g=50, max_capacity_g=40)
    with pytest.raises(ValidationError, match="poll_command"):
        cfg(poll_command="SIR")
