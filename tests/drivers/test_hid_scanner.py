"""hid_scanner: contract over the real pyusb stack on the simulated backend, captures, T11."""

from __future__ import annotations

import itertools
import json
import queue
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.hid_scanner.config import HidScannerConfig
from drivers.hid_scanner.driver import HidScannerDriver
from drivers.hid_scanner.framer import make_framer
from drivers.hid_scanner.parser import decode_pos, parse_events, parse_frame
from edge_agent.config import load_config
from edge_agent.errors import (
    ConfigError,
    DeviceInitError,
    DeviceNotFoundError,
    FrameError,
)
from edge_agent.reading import Capture, Decoded
from edge_agent.supervisor import DeviceWorker
from simulators.hid_scanner import (
    HidScannerSim,
    HidSimConfig,
    SimBackend,
    SimDevice,
    SpoolDevice,
    spool_backend,
)
from simulators.hid_scanner.reports import RELEASE, keyboard_reports, pos_reports, press
from tests.drivers.contract import DriverContract, Rig

ROOT = Path(__file__).resolve().parents[2]
CAPTURES = ROOT / "tests" / "data" / "captures" / "hid_scanner"
VID, PID, SERIAL = 0x0C2E, 0x0B61, "SIM-0001"


def cfg(**kw: Any) -> HidScannerConfig:
    base = {"type": "hid_scanner", "vid": VID, "pid": PID, "serial": SERIAL, "aim_ids": True}
    return HidScannerConfig.model_validate({**base, **kw})


def garble(dev: Any, mode: str) -> str:
    """Send one code the driver must reject; return the reason."""
    if mode == "pos":
        packet = bytearray(pos_reports(b"SF1000000000009", "]C0")[0])
        packet[1] = 20  # the length byte runs into the padding
        dev.send([bytes(packet)])
        return "bad_length"
    reports = keyboard_reports("]C0SF9")
    dev.send([*reports[:4], press(0, 0x3A), RELEASE, *reports[4:]])  # F1 inside the code
    return "unknown_key"


class TestContract(DriverContract):
    """The shared contract, in both modes, in-process and through the spool-dir hook."""

    @pytest.fixture(params=["keyboard", "pos", "keyboard-spool", "pos-spool"])
    def rig(
        self, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> Iterator[Rig]:
        mode, _, via = str(request.param).partition("-")
        dev: SimDevice | SpoolDevice
        if via == "spool":
            monkeypatch.setenv("EDGE_AGENT_USB_BACKEND", f"sim:{tmp_path}")
            dev = SpoolDevice(tmp_path, "hid1", vid=VID, pid=PID, serial=SERIAL, mode=mode)
            drv = HidScannerDriver("h1", cfg(mode=mode))
        else:
            dev = SimDevice(VID, PID, SERIAL, mode)
            drv = HidScannerDriver("h1", cfg(mode=mode), backend=SimBackend([dev]))
        sim = HidScannerSim(dev, HidSimConfig(mode=mode, rate=0))

        def good() -> str:
            reports, truth = sim.next_item()
            assert dev.send(reports)
            return truth.value

        def released() -> None:  # once per attach, every handle given back (the env hook too)
            assert drv.detaches == 51
            backend = spool_backend(tmp_path) if via == "spool" else drv._backend
            assert isinstance(backend, SimBackend) and backend.open_handles == 0
            assert (drv._backend is None) == (via == "spool")

        yield Rig(drv, good, lambda: garble(dev, mode), dev.unplug, dev.replug,
                  fd_slack=1, thread_slack=1, clean_replugs=False,
                  after_replugs=released)  # fmt: skip
        drv.close()


# ---- captures: fed whole, then one report at a time ----------------------------------------
def _view(item: Decoded | str) -> dict[str, Any]:
    if isinstance(item, str):
        return {"reject": item}
    d = item
    return {"kind": d.kind.value, "value": d.value, "aim": d.aim, "symbology": d.symbology}


def run_capture(case: str, per_report: bool) -> list[dict[str, Any]]:
    spec = json.loads((CAPTURES / f"{case}.json").read_text())
    c = cfg(**{"serial": None, "aim_ids": False, **spec["config"]})
    framer = make_framer(c)
    data = (CAPTURES / f"{case}.bin").read_bytes()
    reports = [data[i : i + framer.size] for i in range(0, len(data), framer.size)]
    times = {int(k): float(v) for k, v in spec.get("times", {}).items()}
    bounds = sorted({0, *times, len(reports)})
    events, now = [], 0.0
    for a, b in itertools.pairwise(bounds):
        now = times.get(a, now)
        chunks = reports[a:b] if per_report else [b"".join(reports[a:b])]
        for chunk in chunks:
            events += framer.feed(chunk, now)
    events += framer.expire(now + 10)
    return [_view(x) for x in parse_events(events, c)]


@pytest.mark.parametrize("case", sorted(p.stem for p in CAPTURES.glob("*.bin")))
@pytest.mark.parametrize("per_report", [False, True], ids=["whole", "report-at-a-time"])
def test_capture(case: str, per_report: bool) -> None:
    expected = json.loads((CAPTURES / f"{case}.json").read_text())["expected"]
    assert run_capture(case, per_report) == expected


def test_real_honeywell_reply_reassembles_across_six_packets() -> None:
    data = (CAPTURES / "pos_honeywell_revinf_reply.bin").read_bytes()
    events = [e for e in make_framer(cfg(mode="pos")).feed(data, 0.0) if isinstance(e, bytes)]
    assert [len(e) for e in events] == [6 * 64, 64]
    aim, text = decode_pos(events[0])
    assert aim == b"]X0" and len(text) == 5 * 56 + 9
    assert text.startswith(b"Product Name: Voyager 1602g\r\nBoot Revision")
    assert text.endswith(b"N/A\r\n")
    assert decode_pos(events[1]) == (b"]Z6", b"REVINF\x06.")


def test_protocols_keyboard_example_is_byte_exact() -> None:
    sf1 = (CAPTURES / "kbd_protocols_sf1.bin").read_bytes()[:64]
    assert sf1.hex(" ") == (
        "02 00 16 00 00 00 00 00 00 00 00 00 00 00 00 00 02 00 09 00 00 00 00 00 "
        "00 00 00 00 00 00 00 00 00 00 1e 00 00 00 00 00 00 00 00 00 00 00 00 00 "
        "00 00 28 00 00 00 00 00 00 00 00 00 00 00 00 00"
    )


# ---- property: arbitrary bytes never raise anything but FrameError ---------------------------
kbd_report = st.builds(
    lambda m, k1, k2: bytes([m, 0, k1, k2, 0, 0, 0, 0]),
    st.integers(0, 255), st.integers(0, 0x70), st.sampled_from([0, 0, 1, 0x28]),
)  # fmt: skip
pos_report = st.builds(
    lambda n, aim, body, more: bytes([2, n]) + aim + body + bytes([0x6A, 0, more]),
    st.integers(0, 255), st.sampled_from([b"]C0", b"]C1", b"]Z9", b"\x00\x00\x00", b"C0]"]),
    st.binary(min_size=56, max_size=56), st.sampled_from([0, 0, 1, 2]),
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    mode=st.sampled_from(["keyboard", "pos"]),
    aim=st.booleans(),
    chunks=st.lists(st.one_of(st.binary(max_size=130), kbd_report, pos_report), max_size=40),
)
def test_arbitrary_reports_only_ever_raise_frame_error(
    mode: str, aim: bool, chunks: list[bytes]
) -> None:
    c = cfg(mode=mode, aim_ids=aim, max_code_len=64)
    framer = make_framer(c)
    events = []
    for i, chunk in enumerate(chunks):
        events += framer.feed(chunk, i * 0.02)
    events += framer.expire(1e6)
    for ev in events:
        if isinstance(ev, bytes):
            try:
                d = parse_frame(ev, c)
            except FrameError as err:
                assert err.reason
            else:
                assert isinstance(d.value, str) and d.value and d.raw == ev


# ---- open errors and checks ------------------------------------------------------------------
def test_errors_name_the_fix() -> None:
    with pytest.raises(DeviceNotFoundError):
        HidScannerDriver("h", cfg(), backend=SimBackend([SimDevice(VID, PID, "OTHER")])).open()
    denied = SimBackend([SimDevice(VID, PID, SERIAL, denied=True)])
    with pytest.raises(DeviceInitError, match=r"udev rule.*plugdev"):
        HidScannerDriver("h", cfg(), backend=denied).open()
    with pytest.raises(DeviceInitError, match=r"udev rule.*plugdev"):
        HidScannerDriver("h", cfg(serial=None), backend=denied).open()
    assert denied.open_handles == 0
    kbd = SimBackend([SimDevice(VID, PID, SERIAL, "keyboard")])
    with pytest.raises(DeviceInitError, match="usage page 0x8C"):
        HidScannerDriver("h", cfg(mode="pos"), backend=kbd).open()
    pos = SimBackend([SimDevice(VID, PID, SERIAL, "pos")])
    with pytest.raises(DeviceInitError, match="not a boot keyboard"):
        HidScannerDriver("h", cfg(mode="keyboard"), backend=pos).open()
    assert kbd.open_handles == pos.open_handles == 0


def test_honeywell_pos_switch_report_sent_when_configured() -> None:
    dev = SimDevice(VID, PID, SERIAL, "pos")
    drv = HidScannerDriver("h", cfg(mode="pos", pos_enable_report=True), backend=SimBackend([dev]))
    drv.open()
    drv.close()
    assert dev.feature_reports == [b"\xfe\x01"]


def test_env_hook_is_a_closed_vocabulary(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_AGENT_USB_BACKEND", "os.system")
    with pytest.raises(ConfigError, match="libusb1, libusb0, openusb or sim:<spool dir>"):
        HidScannerDriver("h", cfg())
    monkeypatch.delenv("EDGE_AGENT_USB_BACKEND")
    assert HidScannerDriver("h", cfg())._spec == ""  # production default: pyusb's


def test_detect_lists_hid_interfaces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_AGENT_USB_BACKEND", f"sim:{tmp_path}")
    SpoolDevice(tmp_path, "a", vid=VID, pid=PID, serial="A", mode="keyboard")
    SpoolDevice(tmp_path, "b", vid=VID, pid=PID + 1, serial="B", mode="pos")
    found = sorted((d.port, d.description) for d in HidScannerDriver.detect())
    assert found == [
        ("usb:0c2e:0b61:0", "HID boot keyboard, bus 1"),
        ("usb:0c2e:0b62:0", "HID other, bus 1"),
    ]


def test_registry_and_example_config() -> None:
    agent = load_config(ROOT / "config" / "devices" / "hid_scanner.toml")
    modes = {d.mode for d in agent.devices.values() if isinstance(d, HidScannerConfig)}
    assert modes == {"keyboard", "pos"}
    with pytest.raises(ValueError, match="read_timeout_ms"):
        cfg(read_timeout_ms=0)  # 0 would block forever in libusb (docs/reliability.md U4)


# ---- T11: unplug mid-read, busy first claim, one detach per attach, quiet idle ---------------
class Worker:
    """The daemon's own DeviceWorker around a driver; records states and readings."""

    def __init__(self, drv: HidScannerDriver) -> None:
        self.got: queue.SimpleQueue[Capture] = queue.SimpleQueue()
        self.states: list[tuple[float, str, str]] = []
        self.w = DeviceWorker(drv, self.got.put, self._state)

    def _state(self, _dev: str, state: str, reason: str) -> None:
        self.states.append((time.monotonic(), state, reason))

    def wait_state(self, state: str, after: float, timeout: float = 3.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hit = [t for t, s, _ in self.states if s == state and t >= after]
            if hit:
                return hit[0]
            time.sleep(0.005)
        msg = f"no {state!r} after {after}: {self.states}"
        raise AssertionError(msg)

    def value(self, timeout: float = 3.0) -> object:
        return self.got.get(timeout=timeout).decoded.value


def test_t11_busy_first_claim_unplug_mid_read_reconnects_within_2s() -> None:
    dev = SimDevice(VID, PID, SERIAL, "keyboard", busy_claims=1)
    backend = SimBackend([dev])
    drv = HidScannerDriver("h", cfg(), backend=backend)
    sim = HidScannerSim(dev, HidSimConfig(rate=0))
    worker = Worker(drv)
    worker.w.start()
    try:
        worker.wait_state("connected", 0)
        assert "[Errno 16]" in worker.states[0][2] and worker.states[0][1] == "reconnecting"
        delays = []
        for _ in range(5):
            truth = sim.emit()
            assert worker.value() == truth.value
            time.sleep(0.1)  # the worker is now blocked inside an interrupt read
            t_unplug = time.monotonic()
            dev.unplug()
            worker.wait_state("reconnecting", t_unplug)
            assert "[Errno 19] No such device" in worker.states[-1][2], worker.states[-1]
            time.sleep(0.3)
            t_replug = time.monotonic()
            dev.replug()
            delays.append(worker.wait_state("connected", t_replug) - t_replug)
        truth = sim.emit()  # scanned after the last replug
        assert worker.value() == truth.value
        assert max(delays) <= 2.0, delays
        assert worker.w.reconnects == 5
        assert dev.detach_calls == drv.detaches == dev.generation == 6  # once per attach
    finally:
        worker.w.stop()
        worker.w.join(5)
    assert backend.open_handles == 0


def test_t11_idle_errno_110_no_reconnect_no_log_spam() -> None:
    dev = SimDevice(VID, PID, SERIAL, "pos")
    with structlog.testing.capture_logs() as logs:
        drv = HidScannerDriver("h", cfg(mode="pos"), backend=SimBackend([dev]))
        worker = Worker(drv)
        worker.w.start()
        try:
            worker.wait_state("connected", 0)
            n0, idle0 = len(logs), dev.idle_timeouts
            time.sleep(5.0)
            idle_logs, states = logs[n0:], [s for _, s, _ in worker.states]
        finally:
            worker.w.stop()
            worker.w.join(5)
    assert dev.idle_timeouts - idle0 >= 10  # the errno 110 path really ran (200 ms reads)
    assert worker.w.reconnects == 0 and states == ["connected"]
    assert len(idle_logs) <= 1 and all(e["log_level"] == "debug" for e in idle_logs), idle_logs
