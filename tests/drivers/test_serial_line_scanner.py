"""serial_line_scanner: contract on a real pty, captures, parser rules."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.common.framing import Event, Framer, Reject, TerminatorFramer
from drivers.serial_line_scanner import (
    SerialLineScannerConfig,
    SerialLineScannerDriver,
    make_framer,
    parse_frame,
)
from edge_agent.errors import FrameError
from edge_agent.reading import Kind
from simulators.pty_port import PtyPort
from simulators.serial_line_scanner import ScannerSim, ScannerSimConfig
from tests.drivers.contract import DriverContract, Rig

CAPTURES = Path(__file__).parent.parent / "data" / "captures" / "serial_line_scanner"


def cfg(**kw: object) -> SerialLineScannerConfig:
    return SerialLineScannerConfig.model_validate(
        {"type": "serial_line_scanner", "port": "loop://", **kw}
    )


class TestContract(DriverContract):
    @pytest.fixture(params=["terminator", "stx_etx"])
    def rig(self, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Rig]:
        framing = request.param
        port = PtyPort(tmp_path / "scanner")
        port.plug()
        sim = ScannerSim(port, ScannerSimConfig(framing=framing, aim=False))
        drv = SerialLineScannerDriver(
            "s1", cfg(port=str(port.link), framing=framing, aim_ids=False)
        )

        def good() -> str:
            data, truth = sim.next_item()
            port.write(data)
            return str(truth.value)

        def garbled() -> str:
            port.write(sim.frame("SF12\x0734"))
            return "garbled"

        yield Rig(drv, good, garbled, port.unplug, lambda: port.plug() and None)
        drv.close()
        port.close()


def _events(framer_cfg: SerialLineScannerConfig, data: bytes, bytewise: bool) -> list[object]:
    framer = make_framer(framer_cfg)
    out: list[Event] = []
    chunks = [data[i : i + 1] for i in range(len(data))] if bytewise else [data]
    for c in chunks:
        out += framer.feed(c, 0.0)
    out += framer.expire(10.0)
    result: list[object] = []
    for ev in out:
        if isinstance(ev, Reject):
            result.append({"reject": ev.reason})
            continue
        try:
            d = parse_frame(ev, framer_cfg)
        except FrameError as err:
            result.append({"reject": err.reason})
            continue
        result.append(
            {"kind": d.kind.value, "value": d.value, "aim": d.aim, "symbology": d.symbology}
        )
    return result


@pytest.mark.parametrize("case", sorted(p.stem for p in CAPTURES.glob("*.bin")))
@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "byte-at-a-time"])
def test_capture(case: str, bytewise: bool) -> None:
    spec = json.loads((CAPTURES / f"{case}.json").read_text())
    data = (CAPTURES / f"{case}.bin").read_bytes()
    assert _events(cfg(**spec["config"]), data, bytewise) == spec["expected"]


def test_noread_string_gives_noread_reading() -> None:
    d = parse_frame(b"\x02NoRead\x03", cfg(framing="stx_etx"))
    assert d.kind is Kind.NOREAD and d.value is None and d.raw == b"\x02NoRead\x03"


def test_prefix_suffix_are_stripped_and_enforced() -> None:
    c = cfg(prefix="<", suffix=">", terminator="CR", aim_ids=True)
    assert parse_frame(b"<]C0SF1000000000001>\r", c).value == "SF1000000000001"
    with pytest.raises(FrameError) as err:
        parse_frame(b"SF1000000000001>\r", c)
    assert err.value.reason == "bad_prefix"


def test_gs1_fnc1_kept_and_symbology_named() -> None:
    d = parse_frame(b"]C10109501101020917\x1d10ABC\r\n", cfg(aim_ids=True))
    assert d.symbology == "gs1-128" and d.aim == "]C1" and d.value == "0109501101020917\x1d10ABC"


def test_oversize_frame_rejected_then_resync() -> None:
    c = cfg(max_frame=20)
    out = _events(c, b"X" * 40 + b"\r\nSF1000000000001\r\n", bytewise=False)
    assert out == [
        {"reject": "oversize"},
        {"kind": "barcode", "value": "SF1000000000001", "aim": None, "symbology": None},
    ]


def test_partial_frame_by_inter_byte_timeout() -> None:
    framer = make_framer(cfg(inter_byte_timeout_ms=50))
    assert framer.feed(b"SF100", 0.0) == []
    assert framer.expire(0.02) == []
    assert framer.expire(0.2) == [Reject("partial", b"SF100")]
    assert framer.feed(b"SF1\r\n", 0.3) == [b"SF1\r\n"]


def test_stable_names_required_for_kernel_tty_names() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="stable name"):
        cfg(port="/dev/ttyUSB0")


@settings(max_examples=400, deadline=None)
@given(
    data=st.binary(max_size=300).map(lambda b: b.replace(b"\x05", b"\r")),
    cuts=st.lists(st.integers(1, 40), max_size=30),
    max_len=st.integers(2, 40),
    term=st.sampled_from([b"\r", b"\n", b"\r\n"]),
)
def test_terminator_fast_path_equals_the_byte_loop(
    data: bytes, cuts: list[int], max_len: int, term: bytes
) -> None:
    class ByteLoop(TerminatorFramer):
        feed = Framer.feed

    fast, slow = TerminatorFramer(term, max_len, 0.1), ByteLoop(term, max_len, 0.1)
    out_fast: list[object] = []
    out_slow: list[object] = []
    pos = 0
    for k in [*cuts, len(data)]:
        chunk, pos = data[pos : pos + k], pos + k
        out_fast += fast.feed(chunk, 0.0)
        out_slow += slow.feed(chunk, 0.0)
    assert out_fast + fast.expire(9.0) == out_slow + slow.expire(9.0)
