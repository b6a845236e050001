"""cognex_dataman: contract on TCP and a pty, captures, DMCC checksum, triggers, fuzzing, leaks."""

from __future__ import annotations

import contextlib
import json
import re
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

from drivers.cognex_dataman import (
    CognexDatamanConfig,
    CognexDatamanDriver,
    command,
    parse_line,
    xor,
)
from drivers.common.framing import Reject
from edge_agent.errors import FrameError
from edge_agent.reading import Decoded, Kind
from simulators.cognex_dataman import DataManSim, DataManSimConfig
from simulators.pty_port import PtyPort
from simulators.tunnel.model import SimPort, waybill
from simulators.tunnel.tcp_port import TcpPort
from tests.drivers.contract import DriverContract, Rig, read_until, reopen
from tests.harness import ROOT

CAPTURES = Path(__file__).parent.parent / "data" / "captures" / "cognex_dataman"


def cfg(port: str = "loop://", **kw: object) -> CognexDatamanConfig:
    return CognexDatamanConfig.model_validate({"type": "cognex_dataman", "port": port, **kw})


def make_port(kind: str, tmp_path: Path) -> SimPort:
    port: SimPort = TcpPort() if kind == "tcp" else PtyPort(tmp_path / "dataman")
    port.plug()
    return port


def read_for(drv: CognexDatamanDriver, seconds: float) -> list[Decoded]:
    got: list[Decoded] = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        d = drv.read(0.1)
        if d is not None:
            got.append(d)
    return got


class TestContract(DriverContract):
    @pytest.fixture(params=["tcp-silent", "tcp-extended", "pty-silent", "tcp-index", "pty-index"])
    def rig(self, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Rig]:
        kind, mode = request.param.split("-")
        port = make_port(kind, tmp_path)
        ext = mode == "extended"
        index = mode == "index"  # the trigger index is the reading's gate
        sim = DataManSim(port, DataManSimConfig(extended=ext, checksum=ext, index_field=index))
        drv = CognexDatamanDriver("dm1", cfg(port.url, index_field=index))
        n = iter(range(1, 10_000))

        def good() -> tuple[str, int | None]:
            gate = next(n)
            code = waybill(2, gate)
            assert sim.send(sim.line(code, gate if index else None))
            return code, gate if index else None

        def garbled() -> str:
            data, reason = sim.garble(sim.line("SF1234567890123"))
            assert sim.send(data)
            return reason

        def replug() -> None:
            port.plug()

        yield Rig(drv, good, garbled, port.unplug, replug, expect=lambda d: (d.value, d.gate))
        drv.close()
        port.close()


@pytest.mark.parametrize("case", sorted(p.stem for p in CAPTURES.glob("*.bin")))
@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "byte-at-a-time"])
def test_capture(case: str, bytewise: bool) -> None:
    spec: dict[str, Any] = json.loads((CAPTURES / f"{case}.json").read_text())
    drv = CognexDatamanDriver("cap", cfg(**spec["config"]))
    out: list[object] = [
        {"reject": ev.reason}
        if isinstance(ev, Reject)
        else {"kind": ev.kind.value, "value": ev.value, "gate": ev.gate}
        for ev in drv.replay((CAPTURES / f"{case}.bin").read_bytes(), bytewise=bytewise)
    ]
    assert out == spec["expected"]
    assert dict(drv.answers) == spec.get("answers", {})


def test_command_bytes() -> None:
    assert command("TRIGGER ON") == b"||>TRIGGER ON\r\n"
    assert command("TRIGGER ON", 123) == b"||0:123>TRIGGER ON\r\n"
    line = b"||1:7>TRIGGER ON"
    assert command("TRIGGER ON", 7, checksum=True) == line + bytes([xor(line)]) + b"\r\n"
    assert xor(b"||1:7[0]") == 0x0A  # an LF checksum byte right before the CR LF footer


def test_checked_read_string_carries_check_and_status_answers_are_not_readings() -> None:
    line = b"||1:5[1]SF1000000000000"
    got = parse_line(line + bytes([xor(line)]) + b"\r\n", cfg())
    assert got.kind == "result" and got.readings[0].check == "checksum"
    assert parse_line(b"||[104]\r\n", cfg()).kind == "answer"
    with pytest.raises(FrameError, match="checksum byte missing"):
        parse_line(b"||1:5[1]\r\n", cfg())


def test_noread_none_mode_treats_text_as_a_code_and_empty_lines_as_noise() -> None:
    drv = CognexDatamanDriver("n", cfg(noread_mode="none"))
    got = drv.replay(b"NoRead\r\n\r\nSF1\r\n")
    assert [(g.kind, g.value) for g in got if isinstance(g, Decoded)] == [
        (Kind.BARCODE, "NoRead"), (Kind.BARCODE, "SF1")
    ]  # fmt: skip
    assert drv.rejects == Counter({"noise": 1})


@pytest.mark.parametrize("checksum", [False, True], ids=["plain", "checksum"])
def test_software_trigger_gets_one_result_per_trigger_over_tcp(checksum: bool) -> None:
    port = TcpPort()
    sim = DataManSim(port, DataManSimConfig(trigger="command", extended=checksum,
                                            checksum=checksum, index_field=True))  # fmt: skip
    drv = CognexDatamanDriver("t", cfg(port.plug(), trigger_period_ms=50,
                                       command_checksum=checksum, index_field=True))  # fmt: skip
    drv.open()
    sim.start()
    got = read_for(drv, 1.0)
    sim.stop()
    got += read_for(drv, 0.2)
    drv.close()
    port.close()
    assert 15 <= len(got) <= 24 and drv.triggers_sent - len(got) <= 6, (len(got), drv.triggers_sent)
    assert [d.gate for d in got] == list(range(1, len(got) + 1))
    assert Counter((d.kind.value, d.value, d.gate) for d in got) == Counter(sim.readings())
    assert drv.answers["status 0"] == (len(got) if checksum else 0)
    assert not drv.rejects and {d.check for d in got} == {"checksum" if checksum else "none"}


def test_reader_answers_103_to_a_corrupted_command(tmp_path: Path) -> None:
    port = make_port("pty", tmp_path)
    sim = DataManSim(port, DataManSimConfig(trigger="command", extended=True, checksum=True))
    drv = CognexDatamanDriver("c", cfg(port.url))
    drv.open()
    bad = bytearray(command("TRIGGER ON", 9, checksum=True))
    bad[bad.index(b"T")] ^= 0x20  # "TRIGGER" -> "tRIGGER": the XOR byte no longer matches
    drv.write(bytes(bad))
    deadline = time.monotonic() + 2
    while not drv.answers and time.monotonic() < deadline:
        sim.on_input(port.read())
        assert drv.read(0.05) is None
    assert drv.answers == Counter({"status 103": 1}) and not drv.rejects
    assert sim.readings() == []
    drv.close()
    port.close()


def test_simulator_cli_prints_its_url_and_answers_triggers() -> None:
    cmd = [sys.executable, "-m", "simulators.cognex_dataman", "--tcp", "0", "--trigger",
           "command", "--extended", "--checksum", "--index"]  # fmt: skip
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, cwd=ROOT, text=True) as proc:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert re.fullmatch(r"socket://127\.0\.0\.1:\d+", url), url
        drv = CognexDatamanDriver("cli", cfg(url, index_field=True))
        reopen(drv)
        drv.write(command("TRIGGER ON", 1, checksum=True))
        d = read_until(drv)
        drv.close()
        proc.terminate()
        proc.wait(10)
    assert d is not None and (d.value, d.gate, d.check) == (waybill(1, 1), 1, "checksum")
    assert drv.answers["status 0"] == 1


# ---- fuzzing -----------------------------------------------------------------------------
PIECES = st.sampled_from([
    b"||", b"1:", b"[1]", b"[0]", b"[103]", b">", b"\r\n", b"\r", b"\n", b"NoRead", b"17,",
    b"SF1000000000000", b"\x00\xff", b"\x07", b"\xc3", b"U0Yx", b"=",
])  # fmt: skip
STREAMS = st.one_of(st.binary(max_size=300), st.lists(PIECES, max_size=60).map(b"".join))
CONFIGS: st.SearchStrategy[dict[str, Any]] = st.builds(
    dict,
    noread_mode=st.sampled_from(["none", "empty", "text"]),
    index_field=st.booleans(),
    extended_base64=st.booleans(),
    checksum_span=st.sampled_from(["line", "payload"]),
    terminator=st.sampled_from(["CR", "LF", "CRLF"]),
)


@settings(max_examples=300, deadline=None)
@given(data=STREAMS, options=CONFIGS)
def test_arbitrary_bytes_only_ever_raise_frame_error(data: bytes, options: dict[str, Any]) -> None:
    c = cfg(max_frame=64, **options)
    drv = CognexDatamanDriver("f", c)
    framer = drv.make_framer()
    for ev in framer.feed(data, 0.0) + framer.expire(1.0):
        if not isinstance(ev, Reject):
            with contextlib.suppress(FrameError):  # anything else fails the test
                parse_line(ev, c)
    assert drv.replay(data) == CognexDatamanDriver("f", c).replay(data, bytewise=True)
