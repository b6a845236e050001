"""datalogic: contract on a pty and TCP, captures, slot rules, framer resync, fuzzing, leaks."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from drivers.common.framing import Reject
from drivers.datalogic import DatalogicConfig, DatalogicDriver, make_framer, parse_message
from edge_agent.errors import FrameError
from edge_agent.reading import Decoded, Kind
from simulators.datalogic import DatalogicSim, DatalogicSimConfig
from simulators.pty_port import PtyPort
from simulators.tunnel.model import SimPort, waybill
from simulators.tunnel.tcp_port import TcpPort
from tests.drivers.contract import DriverContract, Rig, read_until, reopen
from tests.harness import ROOT

CAPTURES = Path(__file__).parent.parent / "data" / "captures" / "datalogic"


def cfg(port: str = "loop://", **kw: object) -> DatalogicConfig:
    return DatalogicConfig.model_validate({"type": "datalogic", "port": port, **kw})


def make_port(kind: str, tmp_path: Path) -> SimPort:
    port: SimPort = TcpPort() if kind == "tcp" else PtyPort(tmp_path / "datalogic")
    port.plug()
    return port


def values(got: list[Decoded | Reject]) -> list[object]:
    return [("reject", g.reason) if isinstance(g, Reject) else (g.kind.value, g.value) for g in got]


class TestContract(DriverContract):
    @pytest.fixture(params=["pty-stx", "pty-none", "tcp-stx"])
    def rig(self, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Rig]:
        kind, header = request.param.split("-")
        header = header.upper() if header == "stx" else header
        port = make_port(kind, tmp_path)
        sim = DatalogicSim(port, DatalogicSimConfig(header=header))
        drv = DatalogicDriver("dl1", cfg(port.url, header=header))
        n = iter(range(1, 10_000))

        def good() -> list[str]:  # two labels in one message: two readings
            i = next(n)
            codes = [waybill(3, i, 0), waybill(3, i, 1)]
            assert sim.send(sim.message(",".join(codes)))
            return codes

        def garbled() -> str:
            data, reason = sim.garble(sim.message("SF1234567890123,0467"))
            assert sim.send(data)
            return reason

        def replug() -> None:
            port.plug()

        yield Rig(drv, good, garbled, port.unplug, replug, per_good=2)
        drv.close()
        port.close()


@pytest.mark.parametrize("case", sorted(p.stem for p in CAPTURES.glob("*.bin")))
@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "byte-at-a-time"])
def test_capture(case: str, bytewise: bool) -> None:
    spec: dict[str, Any] = json.loads((CAPTURES / f"{case}.json").read_text())
    drv = DatalogicDriver("cap", cfg(**spec["config"]))
    out: list[object] = [
        {"reject": ev.reason}
        if isinstance(ev, Reject)
        else {"kind": ev.kind.value, "value": ev.value, "gate": ev.gate}
        for ev in drv.replay((CAPTURES / f"{case}.bin").read_bytes(), bytewise=bytewise)
    ]
    assert out == spec["expected"]


def test_every_slot_reading_carries_the_whole_message() -> None:
    frame = b"\x02SF1000000000000,?,0467\r\n"
    got = parse_message(frame, cfg())
    assert [(d.kind, d.value, d.raw, d.gate) for d in got] == [
        (Kind.BARCODE, "SF1000000000000", frame, None),
        (Kind.NOREAD, None, frame, None),
        (Kind.BARCODE, "0467", frame, None),
    ]


def test_identical_messages_are_two_parcels_without_a_gate_counter() -> None:
    msg = b"\x02SF1000000000000\r\n"
    assert (
        values(DatalogicDriver("d", cfg()).replay(msg + msg))
        == [("barcode", "SF1000000000000")] * 2
    )


def test_oversize_message_is_rejected_and_the_next_one_read() -> None:
    drv = DatalogicDriver("o", cfg(max_frame=32))
    got = drv.replay(b"\x02" + b"7" * 60 + b"\r\n\x02SF1000000000000\r\n", bytewise=True)
    assert values(got) == [("reject", "oversize"), ("barcode", "SF1000000000000")]


CASES = [
    ({"header": "none"}, b"\x00SF1,?\r\n", ["noise", "SF1", None]),
    ({"terminator": "ETX"}, b"\x02SF1;YT2\x03", ["SF1;YT2"]),
    ({"separator": ";", "terminator": "CR"}, b"\x02SF1;YT2\r", ["SF1", "YT2"]),
    ({"global_noread": "NR"}, b"\x02NR\r\n\x02???????\r\n", [None, "???????"]),
]


@pytest.mark.parametrize(("options", "data", "expected"), CASES)
def test_configurable_framing_and_noread(
    options: dict[str, Any], data: bytes, expected: list[object]
) -> None:
    got = DatalogicDriver("c", cfg(**options)).replay(data)
    assert [g.reason if isinstance(g, Reject) else g.value for g in got] == expected


def test_config_rejects_impossible_combinations() -> None:
    with pytest.raises(ValidationError, match="needs header"):
        cfg(header="none", terminator="ETX")
    with pytest.raises(ValidationError, match="must differ"):
        cfg(multiread_separator=",")


@pytest.mark.parametrize("mode", ["single", "standard", "logical", "collection"])
def test_combination_modes_round_trip_through_a_real_pty(mode: str, tmp_path: Path) -> None:
    port = make_port("pty", tmp_path)
    faults = {
        "local_noread": 0.2,
        "noread": 0.1,
        "multiread": 0.1,
        "fragment": 0.3,
        "coalesce": 0.2,
    }
    sim_cfg = DatalogicSimConfig(
        rate=200,
        seed=11,
        mode=mode,
        slots=3,
        multiread_separator=";",
        faults=faults,
        inter_byte_s=0.05,
    )
    sim = DatalogicSim(port, sim_cfg)
    drv = DatalogicDriver("m", cfg(port.url, multiread_separator=";"))
    drv.open()
    sim.start(count=60)
    got = []
    while (d := read_until(drv, 0.5)) is not None:  # until 0.5 s of silence after the last
        got.append((d.kind.value, d.value, d.gate))
    sim.wait(1)
    sim.stop()
    drv.close()
    port.close()
    assert Counter(got) == Counter(sim.readings()) and not drv.rejects
    results = [t.values for t in sim.truth if t.kind == "result"]
    sizes = {len(v) for v in results}
    local_noreads = [v for v in results if None in v and len(v) > 1]
    if mode == "single":  # one label; two only when a multiple read sends both
        assert sizes == {1, 2} and not local_noreads
    elif mode == "collection":  # 1..3 labels, no placeholders
        assert {1, 2, 3} <= sizes and not local_noreads
    else:  # 3 slots with placeholders; global no-read; 2 labels after a multiple read
        assert sizes == {1, 2, 3} and local_noreads


def test_simulator_cli_prints_its_url_and_serves(tmp_path: Path) -> None:
    link = tmp_path / "dl-cli"
    cmd = [sys.executable, "-m", "simulators.datalogic", "--pty", str(link), "--count", "4",
           "--rate", "20", "--mode", "single"]  # fmt: skip
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT,
                          text=True) as proc:  # fmt: skip
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == str(link)
        drv = DatalogicDriver("cli", cfg(str(link)))
        reopen(drv)
        got = [read_until(drv) for _ in range(4)]
        drv.close()
        assert proc.wait(10) == 0
    assert [getattr(d, "value", None) for d in got] == [waybill(1, g) for g in (1, 2, 3, 4)]
    assert re.search("global", subprocess.run(
        [sys.executable, "-m", "simulators.datalogic", "--help"],
        capture_output=True, text=True, cwd=ROOT, check=True).stdout)  # fmt: skip


# ---- fuzzing -----------------------------------------------------------------------------
PIECES = st.sampled_from([
    b"\x02", b"\x03", b"\r\n", b"\r", b"\n", b",", b";", b"?", b"???????", b"MULTI",
    b"0467", b"SF1000000000000", b"\x00\xff", b"\x07", b"\xc3",
])  # fmt: skip
STREAMS = st.one_of(st.binary(max_size=300), st.lists(PIECES, max_size=60).map(b"".join))
CONFIGS: st.SearchStrategy[dict[str, Any]] = st.builds(
    dict,
    header=st.sampled_from(["STX", "none"]),
    terminator=st.sampled_from(["CRLF", "CR", "LF"]),
    multiread_text=st.sampled_from(["", "MULTI"]),
    multiread_separator=st.sampled_from(["", ";"]),
)


@settings(max_examples=300, deadline=None)
@given(data=STREAMS, options=CONFIGS)
def test_arbitrary_bytes_only_ever_raise_frame_error(data: bytes, options: dict[str, Any]) -> None:
    c = cfg(max_frame=64, **options)
    framer = make_framer(c)
    for ev in framer.feed(data, 0.0) + framer.expire(1.0):
        if not isinstance(ev, Reject):
            with contextlib.suppress(FrameError):  # anything else fails the test
                parse_message(ev, c)
    assert DatalogicDriver("f", c).replay(data) == DatalogicDriver("f", c).replay(
        data, bytewise=True
    )
