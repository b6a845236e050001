"""modbus_scale: contract, captures, T12 faults, unplug cycles, decoding properties, mbpoll.

Real parts only: a pymodbus server (simulators.modbus_scale) on real ptys and sockets, the
driver's real pymodbus client, the daemon's real DeviceWorker, Debian's mbpoll as an
independent Modbus master.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from drivers.modbus_scale import ModbusScaleConfig, ModbusScaleDriver, RegisterMap
from drivers.modbus_scale.config import UNIT_GRAMS
from drivers.modbus_scale.frames import (
    classify_unanswered,
    complete,
    crc16,
    parse_frame,
    sound_tail,
)
from drivers.modbus_scale.registers import INT_RANGE, decode_block, encode_block, status_word
from edge_agent.config import parse_config
from edge_agent.errors import ConfigError, DeviceError, DeviceIOError, FrameError
from edge_agent.reading import Decoded
from edge_agent.supervisor import DeviceWorker
from simulators.modbus_scale import ScaleSim, ScaleSimConfig
from tests.drivers.contract import DriverContract, Rig

CAPTURES = Path(__file__).parent.parent / "data" / "captures" / "modbus_scale"
GOOD = {"empty", "motion", "same", "reading"}
MakeSim = Callable[..., ScaleSim]
Transport = Literal["rtu", "rtu-tcp", "tcp"]
#: Drivers made by driver(), closed when the make_sim fixture tears down.
DRIVERS: list[ModbusScaleDriver] = []


#: The register-map keys a config must spell out (they set the weight's scale).
SCALE_KEYS: dict[str, object] = {"weight_register": 0, "unit": "kg", "decimals": 0}


@pytest.fixture
def make_sim(tmp_path: Path) -> Iterator[MakeSim]:
    """Factory: a started simulator (RTU behind ``tmp_path/<name>``); stopped at teardown."""
    sims: list[ScaleSim] = []

    def make(transport: Transport = "rtu", name: str = "bus", **kw: Any) -> ScaleSim:
        link = tmp_path / name if transport == "rtu" else None
        kw.setdefault("auto", False)
        sims.append(ScaleSim(ScaleSimConfig(transport=transport, link=link, **kw)).start())
        return sims[-1]

    yield make
    while DRIVERS:
        DRIVERS.pop().close()
    for s in sims:
        s.stop()


def driver(sim: ScaleSim, **kw: Any) -> ModbusScaleDriver:
    """A driver configured for ``sim`` (ptys do not take parity E: parity N)."""
    table: dict[str, Any] = {
        "type": "modbus_scale", "units": list(sim.cfg.units), "parity": "N", "poll_ms": 50,
        "registers": sim.cfg.registers.model_dump(exclude_none=True),
    }  # fmt: skip
    if sim.cfg.transport == "tcp":
        table |= {"transport": "tcp", "host": sim.cfg.host, "tcp_port": sim.server.port}
    else:
        table |= {"port": sim.url}
    DRIVERS.append(ModbusScaleDriver("scale_bus", ModbusScaleConfig.model_validate(table | kw)))
    return DRIVERS[-1]


def run_for(drv: ModbusScaleDriver, seconds: float) -> list[Decoded]:
    out, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        d = drv.read(0.1)
        if d is not None:
            out.append(d)
    return out


def by_unit(readings: list[Decoded], transport: str) -> dict[int, list[float]]:
    out: dict[int, list[float]] = {}
    for d in readings:
        assert d.value is not None, d
        out.setdefault(d.raw[6] if transport == "tcp" else d.raw[0], []).append(float(d.value))
    return out


def wait(pred: Callable[[], bool], timeout: float) -> bool:
    """Poll ``pred`` (each call counts: it may have side effects) until true or timeout."""
    deadline = time.monotonic() + timeout
    while not (ok := pred()) and time.monotonic() < deadline:
        time.sleep(0.02)
    return ok


# ---- the shared driver contract -------------------------------------------------------
class TestContract(DriverContract):
    @pytest.fixture(params=["rtu", "tcp"])
    def rig(self, request: pytest.FixtureRequest, make_sim: MakeSim) -> Iterator[Rig]:
        sim = make_sim(request.param, units=(1, 2))
        drv = driver(sim)
        weights = iter(range(1000, 29_000, 487))  # 57 weights under max_weight_g

        def good() -> float:
            return sim.place(1, float(next(weights)), motion_s=0.1)

        def garbled() -> str:
            if sim.cfg.transport == "tcp":  # no CRC on TCP: an exception response instead
                sim.inject(1, "exception", code=0x06)
                return "device_busy"
            sim.inject(1, "crc")
            return "crc"

        def one_client_per_open() -> None:
            assert drv.clients_created == 51

        yield Rig(drv, good, garbled, sim.unplug, sim.replug, fd_slack=1, clean_replugs=False,
                  after_replugs=one_client_per_open)  # fmt: skip
        drv.close()


# ---- recorded frames (docs/protocols.md §3.4) -----------------------------------------------
def _spec(case: str) -> dict[str, Any]:
    spec: dict[str, Any] = json.loads((CAPTURES / f"{case}.json").read_text())
    return spec


@pytest.mark.parametrize(
    "case", sorted(p.stem for p in CAPTURES.glob("*.bin") if "request" not in p.stem)
)
def test_capture_response(case: str) -> None:
    spec, frame = _spec(case), (CAPTURES / f"{case}.bin").read_bytes()
    cfg, want = ModbusScaleConfig.model_validate(spec["config"]), spec["expected"]
    if "reject" in want:
        with pytest.raises(FrameError) as err:
            parse_frame(frame, cfg)
        assert err.value.reason == want["reject"]
        return
    unit, sample = parse_frame(frame, cfg)
    (d,) = ModbusScaleDriver("s", cfg).decode(frame)
    assert (unit, sample.grams, sample.stable) == (want["unit"], want["value"], want["stable"])
    assert (d.value, d.unit, d.check, d.raw, d.gate) == (
        want["value"],
        "g",
        want["check"],
        frame,
        None,
    )


@pytest.mark.parametrize("transport", ["rtu", "tcp"])
def test_capture_request_is_what_the_driver_sends(transport: str, make_sim: MakeSim) -> None:
    spec = _spec(f"{transport}_request_unit1_read5")
    regs = RegisterMap.model_validate(spec["config"]["registers"])
    sim = make_sim(transport, units=(1,), registers=regs)
    drv = driver(sim)
    drv.open()
    run_for(drv, 0.1)
    drv.close()
    assert (
        sim.server.received[0] == (CAPTURES / f"{transport}_request_unit1_read5.bin").read_bytes()
    )


# ---- T12: Modbus faults on a 2-slave RTU bus -------------------------------------------
def test_dead_slave_costs_the_other_at_most_one_poll(make_sim: MakeSim) -> None:
    sim = make_sim("rtu", units=(1, 2))
    drv = driver(sim, poll_ms=200, timeout_ms=300, retries=1, offline_probe_ms=1000)
    drv.open()
    run_for(drv, 1.0)
    t_dead = time.monotonic()
    sim.silence(1)
    run_for(drv, 4.0)
    t_back = time.monotonic()
    sim.silence(1, False)
    run_for(drv, 1.5)
    polls = list(drv.polls)
    ok2 = [p.end for p in polls if p.unit == 2 and p.outcome in GOOD]
    gaps = [b - a for a, b in itertools.pairwise(ok2)]
    assert max(gaps) <= 0.2 + 0.3 + 0.1, gaps  # poll + one timeout: at most one poll missed
    assert all(p.end - p.start <= 0.3 + 0.05 for p in polls), max(p.end - p.start for p in polls)
    dead = [p for p in polls if p.unit == 1 and t_dead < p.start < t_back]
    assert {p.outcome for p in dead} == {"timeout"} and len(dead) <= 2 + 4 + 1  # probed 1/s
    assert next(p for p in polls if p.unit == 1 and p.start > t_back).outcome in GOOD
    assert drv.clients_created == 1  # one dead slave never reopens the port (M3)


def test_crc_corrupted_responses_never_make_a_reading(make_sim: MakeSim) -> None:
    sim = make_sim("rtu", units=(1, 2), auto=True, rate=2.0, parcels=5, faults={"crc": 0.2}, seed=7)
    drv = driver(sim, poll_ms=100, timeout_ms=300)
    drv.open()
    readings: list[Decoded] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not _all_weighed(sim, 5):
        readings += run_for(drv, 0.2)
    sent, got = set(sim.server.sent), by_unit(readings, "rtu")
    assert all(d.raw in sent for d in readings)
    assert all(crc16(d.raw[:-2]) == int.from_bytes(d.raw[-2:], "little") for d in readings)
    for u in (1, 2):
        windows = [t for t in sim.truth if t.unit == u and t.kind == "settled"]
        polled = [t.grams for t in windows if _good_poll_inside(drv, u, t.start, t.end)]
        # Published: only weights that settled, in order; and every weight a good poll saw
        # (a window whose every poll was corrupted would be missed: 0.2**6 per window).
        assert _subsequence(got.get(u, []), [t.grams for t in windows]), (u, got, windows)
        assert _subsequence(polled, got.get(u, [])), (u, polled, got)
        assert len(polled) == len(windows) == 5, (polled, windows)
        stats = drv.units[u].stats
        assert stats["crc"] == sim.fault_count(u, "crc") > 0, (u, stats)
        assert set(stats) <= GOOD | {"crc"}, stats  # resynced on the next poll every time
    assert drv.rejects["crc"] >= 1
    assert all(p.end - p.start <= 0.3 + 0.05 for p in drv.polls)  # timeout + 50 ms
    # A corrupted answer ends its request at once: it costs the other unit no bus time.
    assert all(p.end - p.start < 0.1 for p in drv.polls if p.outcome == "crc")


def _good_poll_inside(drv: ModbusScaleDriver, unit: int, start: float, end: float) -> bool:
    return any(
        p.unit == unit and p.outcome in GOOD and start <= p.start and p.end <= end
        for p in drv.polls
    )


def _subsequence(part: Sequence[float | None], whole: Sequence[float | None]) -> bool:
    it = iter(whole)
    return all(x in it for x in part)


def _all_weighed(sim: ScaleSim, parcels: int) -> bool:
    """Every unit had ``parcels`` parcels, and the last stable window ended 0.3 s ago."""
    if any(len(sim.settled(u)) < parcels for u in sim.units):
        return False
    return time.monotonic() > max(t.end for t in sim.truth if t.kind == "settled") + 0.3


def test_wrong_unit_id_and_exception_codes_are_counted_values(make_sim: MakeSim) -> None:
    sim = make_sim("rtu", units=(1, 2))
    drv = driver(sim)
    drv.open()
    sim.place(2, 2000.0)
    sim.inject(1, "wrong_unit", count=3)
    readings: list[Decoded] = []
    while drv.units[1].stats["wrong_unit"] < 3:  # each costs a timeout (0.3 s)
        readings += run_for(drv, 0.1)
    codes = {1: "illegal_function", 2: "illegal_address", 3: "illegal_value",
             4: "device_failure", 6: "device_busy", 0x0B: "gateway_no_response"}  # fmt: skip
    for code in codes:
        sim.inject(1, "exception", code=code)
    w1 = sim.place(1, 1500.0)
    readings += run_for(drv, 1.5)
    assert by_unit(readings, "rtu") == {1: [w1], 2: [2000.0]}
    stats = drv.units[1].stats
    assert stats["wrong_unit"] == 3 and drv.rejects["wrong_unit"] == 1
    assert all(stats[name] == 1 and drv.rejects[name] == 1 for name in codes.values()), stats


def test_line_noise_and_cut_frames_resync_within_one_poll(make_sim: MakeSim) -> None:
    sim = make_sim("rtu", units=(1, 2))
    drv = driver(sim)
    drv.open()
    sim.place(2, 2000.0)
    for fault in ("noise", "short", "noise", "short"):
        sim.inject(1, fault)
    w1 = sim.place(1, 3000.0)
    assert by_unit(run_for(drv, 1.5), "rtu") == {1: [w1], 2: [2000.0]}
    u1 = [p.outcome for p in drv.polls if p.unit == 1]
    bad = [i for i, o in enumerate(u1) if o not in GOOD]
    # Each fault costs exactly its own poll. pymodbus 3.16.1 drops a frame behind junk (its
    # hunt gives up): "noise"; a version that finds the frame makes that poll good instead.
    assert [u1[i] for i in bad] in (["noise", "short", "noise", "short"], ["short", "short"]), u1
    assert bad == list(range(bad[0], bad[0] + len(bad))) or len(bad) == 2, u1
    assert u1[bad[-1] + 1] in GOOD and drv.rejects["short"] == 2


def test_overload_and_word_order_mismatch_are_rejected_not_published(make_sim: MakeSim) -> None:
    sim = make_sim("rtu", units=(1, 2), swap_words=True, capacity_g=30_000.0)
    drv = driver(sim)
    drv.open()
    sim.place(1, 1234.0)  # CDAB served to an ABCD map: 1234 * 65536 counts
    sim.place(2, 35_000.0)  # over capacity: the overload bit
    assert run_for(drv, 0.8) == []
    assert drv.rejects["out_of_range"] == 1 and drv.rejects["overload"] == 1


def test_no_unit_answers_reopens_the_link(make_sim: MakeSim) -> None:
    sim = make_sim("tcp", units=(1, 2))
    drv = driver(sim, timeout_ms=100, retries=0, offline_probe_ms=200, reopen_after_ms=1000)
    drv.open()
    sim.silence(1)
    sim.silence(2)
    t0 = time.monotonic()
    with pytest.raises(DeviceIOError, match="no unit answered"):
        run_for(drv, 3.0)
    assert 1.0 <= time.monotonic() - t0 < 2.0


def test_tcp_reset_during_a_request_is_a_link_error(make_sim: MakeSim) -> None:
    # pymodbus 3.16.1's ModbusTcpClient.recv lets ConnectionResetError out and keeps the dead
    # socket (connected stays True): the driver must still turn it into DeviceIOError (M1).
    sim = make_sim("tcp", units=(1,))
    drv = driver(sim, timeout_ms=1000)
    drv.open()
    sim.silence(1)
    timer = threading.Timer(0.3, sim.reset_connections)
    timer.start()
    with pytest.raises(DeviceIOError, match="reset"):
        run_for(drv, 2.0)
    timer.join()
    sim.silence(1, False)
    drv.open()
    w = sim.place(1, 4321.0)
    assert [d.value for d in run_for(drv, 0.5)] == [w] and drv.clients_created == 2


def supervised(drv: ModbusScaleDriver) -> tuple[DeviceWorker, list[Decoded], list[str]]:
    """The daemon's real DeviceWorker around ``drv``; returns it, its readings and states."""
    caps: list[Decoded] = []
    states: list[str] = []
    w = DeviceWorker(drv, lambda c: caps.append(c.decoded), lambda _d, s, _r: states.append(s))
    w.start()
    assert wait(lambda: "connected" in states, 3)
    return w, caps, states


@pytest.mark.parametrize("fault", ["unplug", "tcp_reset"])
def test_link_loss_recreates_the_client_and_polling_resumes_within_2s(
    fault: str, make_sim: MakeSim
) -> None:
    sim = make_sim("rtu" if fault == "unplug" else "tcp", units=(1, 2))
    drv = driver(sim, poll_ms=100)
    w, caps, states = supervised(drv)
    try:
        w1 = sim.place(1, 1111.0)
        assert wait(lambda: [d.value for d in caps] == [w1], 2)
        if fault == "unplug":
            sim.unplug()
            assert wait(lambda: "reconnecting" in states, 2)
            time.sleep(1.0)
            sim.replug()
        else:
            sim.reset_connections()
        t_back = time.monotonic()
        w2 = sim.place(1, 2222.0)
        assert wait(lambda: [d.value for d in caps] == [w1, w2], 2.0), (caps, states)
        first = next(p for p in drv.polls if p.start > t_back and p.outcome in GOOD)
        assert first.end - t_back < 2.0
        assert drv.clients_created >= 2 and states.count("reconnecting") >= 1
    finally:
        w.stop()
        w.join(3)


def _opens(drv: ModbusScaleDriver) -> bool:
    try:
        drv.open()
    except DeviceError:
        return False
    return True


def test_no_busy_loop_while_the_link_is_down(make_sim: MakeSim) -> None:
    sim = make_sim("tcp", units=(1,))
    drv = driver(sim)
    w, _caps, states = supervised(drv)
    try:
        sim.unplug()
        assert wait(lambda: "reconnecting" in states, 2)
        cpu0, t0 = time.process_time(), time.monotonic()
        time.sleep(2.0)
        share = (time.process_time() - cpu0) / (time.monotonic() - t0)
        assert share < 0.05, f"{share:.1%} CPU while the indicator is unreachable"
    finally:
        w.stop()
        w.join(3)


# ---- properties of the register decoding ------------------------------------------------
maps = st.builds(
    RegisterMap,
    weight_register=st.integers(0, 4),
    weight_type=st.sampled_from(["int16", "uint16", "int32", "uint32", "float32"]),
    word_order=st.sampled_from(["big", "little"]),
    byte_order=st.sampled_from(["big", "little"]),
    unit=st.sampled_from(["g", "kg", "lb"]),
    scale=st.floats(1e-3, 1e3),
    decimals=st.integers(0, 6),
    decimals_register=st.none() | st.integers(5, 6),
    status_register=st.none() | st.just(7),
)


@settings(max_examples=2000, deadline=None)
@given(m=maps, words=st.lists(st.integers(-5, 0x1_0004), max_size=10))
def test_any_register_words_decode_or_raise_frame_error(m: RegisterMap, words: list[int]) -> None:
    try:
        sample = decode_block(words, m)
    except FrameError:
        return
    assert sample.grams == sample.grams and abs(sample.grams) != float("inf")


@settings(max_examples=2000, deadline=None)
@given(frame=st.binary(max_size=40), transport=st.sampled_from(["rtu", "tcp"]))
def test_any_bytes_parse_or_raise_frame_error(frame: bytes, transport: str) -> None:
    cfg = ModbusScaleConfig.model_validate(
        {"type": "modbus_scale", "transport": transport, "port": "loop://", "host": "h",
         "registers": {**SCALE_KEYS, "status_register": 2, "stable_bit": 0}}
    )  # fmt: skip
    with contextlib.suppress(FrameError):
        parse_frame(frame, cfg)
    reasons = {"timeout", "wrong_unit", "noise", "short", "crc", "garbled"}
    assert classify_unanswered(frame, 1, transport, 3) in reasons
    tail = sound_tail(frame, 1, transport, 3)
    assert tail is None or (tail in frame and isinstance(complete(frame, transport, 3), bool))


@settings(max_examples=500, deadline=None)
@given(m=maps, grams=st.integers(50, 30_000).map(float))
def test_encode_then_decode_gives_the_weight(m: RegisterMap, grams: float) -> None:
    weight = set(range(m.weight_register, m.weight_register + m.words))
    assume(not weight & {m.decimals_register, m.status_register})
    m = m.model_copy(update={"stable_bit": 0 if m.status_register is not None else None})
    per_count = UNIT_GRAMS[m.unit] * m.scale / 10**m.decimals
    if m.weight_type != "float32":
        low, high = INT_RANGE[m.weight_type]
        assume(low <= grams / per_count <= high)  # else the indicator saturates
    sample = decode_block(encode_block(grams, m, status=status_word(m, stable=True)), m)
    # integers: half a count; float32: 6 significant digits (FLT_DIG) are kept
    assert abs(sample.grams - grams) <= per_count / 2 + grams * 5e-6 + 1e-3
    assert sample.stable is (True if m.status_register is not None else None)


def test_config_errors_name_the_key() -> None:
    def load(dev: dict[str, Any]) -> None:
        table = {"type": "modbus_scale", "port": "/dev/s", "registers": SCALE_KEYS, **dev}
        node = {"site": "S", "line": "L", "agent_id": "a"}
        raw = {"node": node, "mqtt": {"brokers": [{"host": "127.0.0.1"}]}, "devices": {"s1": table}}
        parse_config(raw, Path("line.toml"))

    cases: list[tuple[dict[str, Any], str]] = [
        ({"registers": {**SCALE_KEYS, "status_register": 200}}, "span more than 125"),
        ({"registers": {**SCALE_KEYS, "stable_bit": 3}}, "status bits need status_register"),
        ({"registers": {**SCALE_KEYS, "weight_regster": 3}}, "unknown key 'weight_regster'"),
        ({"registers": {"weight_register": 3}}, "with unit, decimals (or decimals_register)"),
        ({"port": "/dev/ttyUSB0"}, "stable name"),
        ({"units": [1, 1]}, "without repeats"),
    ]
    for dev, text in cases:
        with pytest.raises(ConfigError, match=re.escape(text)):
            load(dev)


# ---- the simulator against an independent Modbus master ---------------------------------
needs_mbpoll = pytest.mark.skipif(
    shutil.which("mbpoll") is None,
    reason="mbpoll not installed (Debian package mbpoll): no independent Modbus master",
)


def mbpoll(sim: ScaleSim, *args: str) -> subprocess.CompletedProcess[str]:
    if sim.cfg.transport == "tcp":
        link = ["-m", "tcp", "-p", str(sim.server.port), sim.cfg.host]
    else:
        link = ["-m", "rtu", "-b", "19200", "-P", "none", sim.url]
    cmd = ["mbpoll", "-0", "-1", "-o", "0.5", *args, *link]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)


def values(out: str) -> list[str]:
    return re.findall(r"^\[\d+\]:\s+(\S+)", out, re.MULTILINE)


@needs_mbpoll
@pytest.mark.parametrize("transport", ["rtu", "tcp"])
def test_mbpoll_reads_what_the_simulator_serves(transport: str, make_sim: MakeSim) -> None:
    f32 = RegisterMap(weight_register=4, weight_type="float32", word_order="little", unit="kg")
    sim = make_sim(transport, units=(1, 2))
    w1, w2 = sim.place(1, 12_345.0), sim.place(2, 678.0)
    int32 = mbpoll(sim, "-a", "1", "-r", "0", "-c", "1", "-t", "4:int", "-B")
    assert values(int32.stdout) == [str(round(w1))], int32  # kg, 3 decimals, ABCD
    regs = mbpoll(sim, "-a", "2", "-r", "0", "-c", "3", "-t", "4")
    assert values(regs.stdout) == ["0", str(round(w2)), "1"], regs  # status: stable bit 0
    bad = mbpoll(sim, "-a", "1", "-r", "0", "-c", "10", "-t", "4")
    assert bad.returncode != 0 and "Illegal data address" in bad.stderr, bad
    nobody = mbpoll(sim, "-a", "99", "-r", "0", "-c", "1", "-t", "4")
    assert nobody.returncode != 0 and not values(nobody.stdout), nobody
    sim2 = make_sim(transport, name="bus2", units=(3,), registers=f32)
    sim2.place(3, 1234.0)
    flt = mbpoll(sim2, "-a", "3", "-r", "4", "-c", "1", "-t", "4:float")  # default order CDAB
    assert values(flt.stdout) and abs(float(values(flt.stdout)[0]) - 1.234) < 1e-6, flt


def test_example_config_loads_and_each_device_gets_a_demo_simulator(tmp_path: Path) -> None:
    from edge_agent.config import load_config
    from simulators.modbus_scale import for_demo

    cfg = load_config(Path(__file__).parents[2] / "config" / "devices" / "modbus_scale.toml")
    for seed, (dev_id, table) in enumerate(cfg.devices.items(), start=1):
        assert isinstance(table, ModbusScaleConfig)
        # Keep ptys inside tmp_path and take free ports: the demo line may hold 15020-15029.
        if table.port and table.port.startswith("/"):
            dev = table.model_copy(update={"port": str(tmp_path / dev_id)})
        elif table.port:
            dev = table.model_copy(update={"port": f"socket://127.0.0.1:{_free_port()}"})
        else:
            dev = table.model_copy(update={"tcp_port": _free_port()})
        demo = for_demo(dev_id, dev, 1.0, seed)
        try:
            drv = ModbusScaleDriver(dev_id, dev.model_copy(update={"parity": "N"}))
            drv.open()
            assert run_for(drv, 0.3) == []  # empty platforms until start()
            drv.close()
            assert (dev.port or f"{dev.host}:{dev.tcp_port}") in demo.describe()
        finally:
            demo.stop()
        assert demo.expected() == 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
