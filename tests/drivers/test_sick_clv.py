"""sick_clv: contract on TCP and a pty, captures, parser rules, gate/heartbeat, fuzzing, leaks."""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from drivers.common.framing import Reject, StxEtxFramer
from drivers.sick_clv import SickClvConfig, SickClvDriver
from drivers.sick_clv.telegram import parse_telegram
from edge_agent.errors import DeviceIOError, FrameError
from edge_agent.reading import Decoded, Kind
from simulators.pty_port import PtyPort
from simulators.sick_clv import ClvSim, ClvSimConfig
from simulators.tunnel.model import CARRIERS, SimPort, waybill
from simulators.tunnel.tcp_port import TcpPort
from tests.drivers.contract import DriverContract, Rig, read_until, reopen
from tests.harness import ROOT

CAPTURES = Path(__file__).parent.parent / "data" / "captures" / "sick_clv"


def cfg(port: str = "loop://", **kw: object) -> SickClvConfig:
    return SickClvConfig.model_validate({"type": "sick_clv", "port": port, **kw})


def make_port(kind: str, tmp_path: Path) -> SimPort:
    port: SimPort = TcpPort() if kind == "tcp" else PtyPort(tmp_path / "clv")
    port.plug()
    return port


class TestContract(DriverContract):
    @pytest.fixture(params=["tcp", "pty"])
    def rig(self, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Rig]:
        port = make_port(request.param, tmp_path)
        sim = ClvSim(port, ClvSimConfig(header_fields=("gate",)))
        drv = SickClvDriver("clv1", cfg(port.url, header_fields=["gate"]))
        n = iter(range(1, 10_000))

        def good() -> tuple[str, int]:
            gate = next(n)
            code = waybill(1, gate)
            assert sim.send(sim.telegram([code], gate))
            return code, gate

        def garbled() -> str:
            data, reason = sim.garble(sim.telegram(["SF1234567890123"], 99_999))
            assert sim.send(data)
            return reason

        def replug() -> None:
            port.plug()

        yield Rig(drv, good, garbled, port.unplug, replug, expect=lambda d: (d.value, d.gate))
        drv.close()
        port.close()


def _replay(
    spec: dict[str, Any], data: bytes, bytewise: bool
) -> tuple[list[object], SickClvDriver]:
    drv = SickClvDriver("cap", cfg(**spec["config"]))
    out: list[object] = []
    for ev in drv.replay(data, bytewise=bytewise):
        if isinstance(ev, Reject):
            out.append({"reject": ev.reason})
        else:
            out.append({"kind": ev.kind.value, "value": ev.value, "gate": ev.gate})
    return out, drv


@pytest.mark.parametrize("case", sorted(p.stem for p in CAPTURES.glob("*.bin")))
@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "byte-at-a-time"])
def test_capture(case: str, bytewise: bool) -> None:
    spec = json.loads((CAPTURES / f"{case}.json").read_text())
    out, drv = _replay(spec, (CAPTURES / f"{case}.bin").read_bytes(), bytewise)
    assert out == spec["expected"]
    assert dict(drv.answers) == spec.get("answers", {})
    assert drv.heartbeats == spec.get("heartbeats", 0)
    assert sum(drv.rejects.values()) == sum("reject" in e for e in spec["expected"])


def test_multi_code_telegram_gives_one_reading_per_code_with_whole_raw() -> None:
    frame = b"\x02000123;2;SF1234567890123;YT1234567890123\x03"
    t = parse_telegram(frame, cfg(header_fields=["gate", "count"]))
    assert [(d.value, d.gate, d.check, d.raw) for d in t.readings] == [
        ("SF1234567890123", 123, "count", frame),
        ("YT1234567890123", 123, "count", frame),
    ]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"00012x;1;SF1", "garbled"),  # gate counter not a number
        (b"000123;1;SF1;;YT1", "garbled"),  # empty code field
        (b"000123", "garbled"),  # header only
        (b"000123;2;NoRead", "count_mismatch"),
        (b"000123;1;SF1;YT1", "count_mismatch"),
        (b"000123;\xff;SF1", "garbled"),  # not UTF-8
    ],
)
def test_bad_telegrams_are_typed_rejects(body: bytes, reason: str) -> None:
    with pytest.raises(FrameError) as err:
        parse_telegram(b"\x02" + body + b"\x03", cfg(header_fields=["gate", "count"]))
    assert err.value.reason == reason


def test_heartbeat_published_only_when_asked() -> None:
    data = b"\x02HB\x03\x02SF1\x03"
    quiet = SickClvDriver("a", cfg())
    assert [d.value for d in quiet.replay(data) if isinstance(d, Decoded)] == ["SF1"]
    loud = SickClvDriver("b", cfg(heartbeat_publish=True, heartbeat="LIFE"))
    got = loud.replay(b"\x02LIFE\x03\x02SF1\x03")
    assert [(d.kind, d.value) for d in got if isinstance(d, Decoded)] == [
        (Kind.HEARTBEAT, None), (Kind.BARCODE, "SF1")
    ]  # fmt: skip
    assert loud.heartbeats == 1


def test_config_rejects_inconsistent_gate_and_fields() -> None:
    with pytest.raises(ValidationError, match="gate_open_ms"):
        cfg(gate_trigger="software", gate_period_ms=100, gate_open_ms=100)
    with pytest.raises(ValidationError, match="at most once"):
        cfg(header_fields=["gate", "gate"])
    with pytest.raises(ValidationError, match="stable name"):
        cfg(port="/dev/ttyUSB0")
    with pytest.raises(ValidationError, match="extra"):
        cfg(seperator=",")


def read_for(drv: SickClvDriver, seconds: float) -> list[tuple[str, object, int]]:
    got: list[tuple[str, object, int]] = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        d = drv.read(0.1)
        if d is not None:
            assert d.gate is not None
            got.append((d.kind.value, d.value, d.gate))
    return got


def test_software_gate_commands_and_answers_over_tcp() -> None:
    port = TcpPort()
    sim = ClvSim(port, ClvSimConfig(trigger="command", header_fields=("gate", "count")))
    c = cfg(port.plug(), header_fields=["gate", "count"], gate_trigger="software",
            gate_period_ms=100, gate_open_ms=30)  # fmt: skip
    drv = SickClvDriver("g", c)
    drv.open()
    sim.start()
    got = read_for(drv, 1.2)
    sim.stop()  # from here on gates are sent but never answered
    got += read_for(drv, 0.3)
    drv.close()
    port.close()
    on, off = drv.answers["sAN mTCgateon"], drv.answers["sAN mTCgateoff"]
    assert 10 <= on <= 14 and off in (on - 1, on), drv.answers
    assert drv.gates_sent - on <= 4
    assert on + off == sum(t.kind == "answer" for t in sim.truth)
    assert Counter(got) == Counter(sim.readings())
    assert [g for _, _, g in got] == sorted(g for _, _, g in got)  # one result per closed gate
    assert len({g for _, _, g in got}) == sum(t.kind == "result" for t in sim.truth) >= 9


def test_sfa_error_answer_is_counted_not_published(tmp_path: Path) -> None:
    port = make_port("pty", tmp_path)
    sim = ClvSim(port, ClvSimConfig(trigger="command"))
    drv = SickClvDriver("e", cfg(port.url))
    drv.open()
    drv.write(b"\x02sMN mBogus\x03")
    deadline = time.monotonic() + 2
    while drv.answers["sFA"] == 0 and time.monotonic() < deadline:
        sim.on_input(port.read())
        assert drv.read(0.05) is None
    assert drv.answers == Counter({"sFA": 1}) and not drv.rejects
    drv.close()
    port.close()


@pytest.mark.parametrize("kind", ["tcp", "pty"])
def test_heartbeats_counted_and_silence_raises(kind: str, tmp_path: Path) -> None:
    port = make_port(kind, tmp_path)
    sim = ClvSim(port, ClvSimConfig(trigger="command", heartbeat_s=0.1))
    drv = SickClvDriver("h", cfg(port.url, heartbeat_timeout_s=0.5))
    drv.open()
    sim.start()
    t0 = time.monotonic()
    while time.monotonic() - t0 < 1.0:
        assert drv.read(0.1) is None  # heartbeats are not readings
    assert 5 <= drv.heartbeats <= 12, drv.heartbeats
    sim.stop()  # the reader hangs: no heartbeat any more
    stalled = time.monotonic()
    with pytest.raises(DeviceIOError, match="heartbeat lost"):
        while time.monotonic() - stalled < 3:
            drv.read(0.1)
    assert 0.35 <= time.monotonic() - stalled <= 1.5
    drv.close()
    port.close()


def test_same_seed_writes_the_same_bytes_and_truth(tmp_path: Path) -> None:
    faults = {"coalesce": 0.2, "noise": 0.1, "garble": 0.1, "partial": 0.1, "noread": 0.1,
              "late": 0.1, "duplicate": 0.1, "double_stx": 0.1}  # fmt: skip
    runs = []
    for i in range(2):
        port = PtyPort(tmp_path / f"clv{i}")
        port.plug()
        sim = ClvSim(port, ClvSimConfig(seed=5, header_fields=("gate", "count"), faults=faults))
        for _ in range(40):
            sim.emit()
        sim.settle()
        fd = os.open(port.path, os.O_RDONLY | os.O_NONBLOCK)
        wire = b""
        while select.select([fd], [], [], 0.2)[0]:  # the pty delivers in chunks, asynchronously
            wire += os.read(fd, 65536)
        os.close(fd)
        port.close()
        runs.append((wire, [(t.n, t.kind, t.values, t.gate, t.reasons) for t in sim.truth]))
    assert runs[0] == runs[1]
    assert len(runs[0][0]) > 1000 and {k for _, k, *_ in runs[0][1]} >= {"result", "fault"}


def test_waybills_match_the_carrier_patterns() -> None:
    for gate in range(1, 60):
        for slot in range(3):
            code = waybill(7, gate, slot)
            assert any(re.fullmatch(p, code) for _, p, _ in CARRIERS), code
    assert len({waybill(7, g, s) for g in range(1, 500) for s in range(3)}) == 499 * 3


def test_simulator_cli_prints_its_url_and_serves(tmp_path: Path) -> None:
    truth = tmp_path / "truth.jsonl"
    cmd = [sys.executable, "-m", "simulators.sick_clv", "--tcp", "0", "--count", "3", "--rate",
           "20", "--header", "gate,count", "--max-codes", "1", "--truth", str(truth)]  # fmt: skip
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, cwd=ROOT, text=True) as proc:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert re.fullmatch(r"socket://127\.0\.0\.1:\d+", url), url
        drv = SickClvDriver("cli", cfg(url, header_fields=["gate", "count"]))
        reopen(drv)
        got = [read_until(drv) for _ in range(3)]
        drv.close()
        assert proc.wait(10) == 0
    assert [(d.gate, d.value) for d in got if d] == [(g, waybill(1, g)) for g in (1, 2, 3)]
    assert len(truth.read_text().splitlines()) == 3
    help_out = subprocess.run([sys.executable, "-m", "simulators.sick_clv", "--help"],
                              capture_output=True, text=True, cwd=ROOT, check=True)  # fmt: skip
    assert "mTCgateon" in help_out.stdout


# ---- fuzzing: framer + router + parser raise nothing but FrameError ------------------------
PIECES = st.sampled_from([
    b"\x02", b"\x03", b"sAN mTCgateon 1", b"sFA 5", b"HB", b";", b"NoRead", b"000123",
    b"SF1234567890123", b"\x07", b"\x00\xff", b"\xc3", b" ",
])  # fmt: skip
STREAMS = st.one_of(st.binary(max_size=300), st.lists(PIECES, max_size=60).map(b"".join))


@settings(max_examples=300, deadline=None)
@given(data=STREAMS, header=st.sampled_from([[], ["gate"], ["gate", "count"], ["count"]]))
def test_arbitrary_bytes_only_ever_raise_frame_error(data: bytes, header: list[str]) -> None:
    c = cfg(header_fields=header, max_frame=64)
    framer = StxEtxFramer(c.max_frame, 0.1)
    for ev in framer.feed(data, 0.0) + framer.expire(1.0):
        if not isinstance(ev, Reject):
            with contextlib.suppress(FrameError):  # anything else fails the test
                parse_telegram(ev, c)
    whole = SickClvDriver("f", c).replay(data)
    assert whole == SickClvDriver("f", c).replay(data, bytewise=True)
