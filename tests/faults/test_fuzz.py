"""D16/D17: every parser, the config loader and the waybill table under hypothesis.

Each driver target runs random streams through the driver's own read path (framer, router or
settle screen, parser, the base class's reject path; see :mod:`tests.fuzz.targets`): nothing may
escape, every reading must pass the D16 checks at the driver's documented limits, and cutting
the same bytes into other reads must not change the outcome. Streams mix random bytes with the
protocol's own tokens so the parsers are reached past their first check. Sizes come from
``HYPOTHESIS_PROFILE`` (:mod:`tests.fuzz.profiles`); the nightly atheris run is
``python -m tests.fuzz`` and its crash inputs are replayed here from ``tests/fuzz/corpus/``.
"""

from __future__ import annotations

import base64
import string
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.cognex_dataman import xor
from drivers.modbus_scale.frames import read_pdu, rtu_adu, tcp_adu
from drivers.toledo_continuous import checksum
from tests.fuzz import targets as t
from tests.fuzz.profiles import fuzz_settings

pytestmark = pytest.mark.faults

CORPUS = Path(__file__).parent.parent / "fuzz" / "corpus"


def hurt(frame: bytes, pos: int, byte: int, cut: bool) -> bytes:
    """``frame`` with the byte at ``pos`` changed, or cut off there."""
    pos %= len(frame) or 1
    return frame[:pos] if cut else frame[:pos] + bytes([byte]) + frame[pos + 1 :]


def damaged(frames: st.SearchStrategy[bytes]) -> st.SearchStrategy[list[bytes]]:
    """Reads of good frames, frames with one byte changed or cut, and random bytes."""
    bad = st.builds(hurt, frames, st.integers(0, 40), st.integers(0, 255), st.booleans())
    piece = st.one_of(frames, frames, bad, st.binary(max_size=24))
    return st.lists(st.lists(piece, min_size=1, max_size=4).map(b"".join), max_size=10)


def framed(heads: list[bytes], pieces: list[bytes], tails: list[bytes]) -> st.SearchStrategy[bytes]:
    """A frame: one of ``heads``, a body of tokens and random bytes, one of ``tails``."""
    body = st.lists(st.one_of(st.sampled_from(pieces), st.binary(max_size=6)), max_size=5)
    return st.builds(
        lambda h, b, tl: h + b"".join(b) + tl,
        st.sampled_from(heads),
        body,
        st.sampled_from(tails),
    )


CODES = [b"SF1234567890123", b"YT1234567890123", b"0460012345678", "é".encode(), b"A" * 140]
HOSTILE = [b"\x00", b"\x1b[31m", b"\x1b", b"\x7f", b"\xc2\x9b", "\u202e".encode(), b"\xff", b"\x1d"]
SCANNER = [*CODES, *HOSTILE, b"NoRead", b"NR", b"?", b"???????", b"MULTI"]


def cognex(head: bytes, body: list[bytes], tail: bytes) -> bytes:
    """A DataMan line; a ``||1`` (checksum) header gets its XOR byte."""
    line = head + b"".join(body)
    return line + (bytes([xor(line)]) if head.startswith(b"||1") else b"") + tail


FRAMES = {
    "serial_line_scanner": framed(
        [b"", b"\x02", b"<", b"]C0", b"\x02]E0", b"]Q1", b"]e0", b"<]C1"],
        SCANNER,
        [b"\r\n", b"\r", b"\n", b"\x03", b">\r", b">\r\n", b"\x03\r\n"],
    ),
    "sick_clv": framed(
        [b"\x02", b"\x02000123;2;", b"\x02000124;", b"\x021;", b"\x020;", b"\x02sAN ",
         b"\x0212,1,"],
        [*SCANNER, b";", b",", b"HB", b"mTCgateon 1", b"5"],
        [b"\x03"],
    ),
    "cognex_dataman": st.builds(
        cognex,
        st.sampled_from([b"", b"||1:5[1]", b"||0[1]", b"||[0]", b"||1[103]", b"12,",
                         b"||0:3[1]12,", b"||1[1]7,"]),
        st.lists(st.one_of(st.sampled_from([*SCANNER, b",", base64.b64encode(b"SF1234")]),
                           st.binary(max_size=6)), max_size=4),
        st.sampled_from([b"\r\n", b"\r", b"\n"]),
    ),
    "datalogic": framed(
        [b"\x02", b""], [*SCANNER, b",", b";", b"||", b",?,"], [b"\r\n", b"\r", b"\n", b"\x03"]
    ),
    "mtsics_scale": st.builds(
        lambda cmd, status, number, unit: b" ".join([cmd, status, number, unit]) + b"\r\n",
        st.sampled_from([b"S", b"S", b"SI", b"ES", b"Z", b"T", b"x"]),
        st.sampled_from([b"S", b"S", b"D", b"I", b"+", b"-", b""]),
        st.one_of(
            st.decimals(-99999, 99999, places=3).map(lambda d: str(d).encode()),
            st.sampled_from([b"9" * 40, b"1e9", b"nan", b"-0", b"1."]),
        ),
        st.sampled_from([b"g", b"kg", b"mg", b"t", b"lb", b"oz", b"st", b""]),
    ),
}  # fmt: skip


# ---- scanners and line-oriented scales --------------------------------------------------------
@pytest.mark.parametrize("name", sorted(FRAMES))
def test_driver_stream(name: str) -> None:
    target = t.TARGETS[name]

    @fuzz_settings()
    @given(index=st.integers(0, 7), chunks=damaged(FRAMES[name]))
    def run(index: int, chunks: list[bytes]) -> None:
        target.check_split(index, chunks)

    run()


# ---- fixed-layout scales: frames built field by field, then damaged ---------------------------
SMA_FRAMES = st.builds(
    lambda s, r, n, m, w, u: b"\n" + s + r + n + m + b" " + w.rjust(10) + u.ljust(3) + b"\r",
    st.sampled_from([b" ", b"Z", b"O", b"U", b"E", b"T", b"e", b"x"]),
    st.sampled_from([b"0", b"1", b"9", b"a"]),
    st.sampled_from([b"G", b"N", b"g", b"n", b"T", b"x"]),
    st.sampled_from([b" ", b"M", b"x"]),
    st.one_of(
        st.decimals(-99999, 99999, places=3).map(lambda d: str(d).encode()[:10]),
        st.sampled_from([b"-------", b"1e9", b"nan", b"inf", b"9" * 10]),
    ),
    st.sampled_from([b"g", b"kg", b"lb", b"oz", b"t", b"st", b""]),
)


def toledo_frame(swa: int, swb: int, swc: int, weight: int, tare: bool, chk: bool) -> bytes:
    body = bytes([0x02, swa, swb, swc]) + b"%06d" % weight + (b"000000" if tare else b"") + b"\r"
    return body + (bytes([checksum(body)]) if chk else b"")


TOLEDO_FRAMES = st.builds(
    toledo_frame,
    st.integers(0x20, 0x7F),
    st.integers(0x20, 0x7F),
    st.integers(0x20, 0x7F),
    st.integers(0, 999_999),
    st.booleans(),
    st.booleans(),
)


@pytest.mark.parametrize(
    ("name", "frames"), [("sma_scale", SMA_FRAMES), ("toledo_continuous", TOLEDO_FRAMES)]
)
def test_scale_frames(name: str, frames: st.SearchStrategy[bytes]) -> None:
    target = t.TARGETS[name]

    @fuzz_settings()
    @given(index=st.integers(0, 3), chunks=damaged(frames))
    def run(index: int, chunks: list[bytes]) -> None:
        target.check_split(index, chunks)

    run()


# ---- HID: whole reports (keyboard and POS), plus reads of any length --------------------------
KBD = st.builds(
    lambda m, k1, k2: bytes([m, 0, k1, k2, 0, 0, 0, 0]),
    st.sampled_from([0, 0, 0, 0x02, 0x01, 0x04, 0x20, 0x44]),
    st.one_of(st.integers(0, 0x70), st.sampled_from([0x28, 0x2B, 0x30, 0x59, 0x62])),
    st.sampled_from([0, 0, 0x01, 0x28]),
)
POS = st.builds(
    lambda n, aim, body, more: bytes([2, n]) + aim + body.ljust(56, b"\0")[:56] + b"\x6a\0" + more,
    st.one_of(st.integers(0, 56), st.integers(0, 255)),
    st.sampled_from([b"]C0", b"]C1", b"]Q1", b"]Z9", b"\x00\x00\x00", b"C0]"]),
    st.one_of(st.sampled_from([c[:56] for c in CODES + HOSTILE]), st.binary(max_size=56)),
    st.sampled_from([b"\0", b"\0", b"\x01", b"\x02"]),
)


@fuzz_settings()
@given(
    index=st.integers(0, 3),
    chunks=st.lists(
        st.one_of(
            st.lists(KBD, min_size=1, max_size=12).map(b"".join),
            st.lists(POS, min_size=1, max_size=3).map(b"".join),
            st.binary(max_size=130),
        ),
        max_size=10,
    ),
)
def test_hid_reports(index: int, chunks: list[bytes]) -> None:
    t.TARGETS["hid_scanner"].check_split(index, chunks)


# ---- Modbus: register blocks in sound frames, and raw bytes -----------------------------------
ADU = st.builds(
    lambda rtu, unit, fc, words: (rtu_adu if rtu else lambda u, p: tcp_adu(7, u, p))(
        unit, read_pdu(fc, words)
    ),
    st.booleans(),
    st.sampled_from([1, 2, 3]),
    st.sampled_from([3, 4, 0x83]),
    st.lists(st.integers(0, 0xFFFF), max_size=4),
)


@fuzz_settings()
@given(
    index=st.integers(0, 5),
    chunks=st.lists(st.one_of(ADU, st.binary(max_size=20), ADU.map(lambda a: a[1:])), max_size=12),
)
def test_modbus_responses(index: int, chunks: list[bytes]) -> None:
    t.modbus(index, chunks)


# ---- config loader ----------------------------------------------------------------------------
VALID = {
    "node": {"site": "S1", "line": "L1", "agent_id": "a1"},
    "mqtt": {"brokers": [{"host": "localhost", "port": 1883}]},
    "devices": {"t1": {"type": "serial_line_scanner", "port": "/dev/serial/by-id/usb-x"}},
}
KEYS = st.sampled_from(
    ["node", "mqtt", "devices", "stations", "waybills", "queue", "log", "site", "type", "port",
     "brokers", "host", "password", "password_file", "password_env", "password_credential",
     "max_bytes", "rules", "pattern", "carrier", "check", "t1", "baudrate", "max_frame",
     "registers", "units", "header_fields", "source", "inflight", "tls", "ca_file"]
)  # fmt: skip
SCALARS = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=True),
    st.booleans(),
    st.text(max_size=20),
    st.sampled_from(["serial_line_scanner", "sick_clv", "modbus_scale", "virtual", "/dev/ttyUSB0",
                     "a\x00b", "(a+)+$", "../../etc/passwd", "", "x" * 300]),
)  # fmt: skip
TREES = st.recursive(
    SCALARS,
    lambda kids: st.one_of(st.lists(kids, max_size=4), st.dictionaries(KEYS, kids, max_size=5)),
    max_leaves=20,
)


def merged(base: dict[str, object], patch: dict[str, object]) -> dict[str, object]:
    out = dict(base)
    for key, value in patch.items():
        old = out.get(key)
        out[key] = (
            merged(old, value) if isinstance(old, dict) and isinstance(value, dict) else value
        )
    return out


@fuzz_settings()
@given(patch=st.dictionaries(KEYS, TREES, max_size=4), secrets=st.booleans())
def test_config_structured(patch: dict[str, object], secrets: bool) -> None:
    """Random tables merged into a valid config, rendered to TOML: a config or a ConfigError."""
    t.config_text(t.toml(merged(VALID, patch)), secrets)


TOML_PIECES = st.sampled_from(
    ["[node]\n", "[mqtt]\n", "[devices.t1]\n", "[[waybills.rules]]\n", "[stations.s1]\n",
     'site = "S1"\n', "brokers = [{host = \"h\"}]\n", 'type = "sick_clv"\n', "= ", "\"\\u0000\"",
     "[" * 50, "]", "{", "}", "9" * 5000, "1e999", "nan", "2024-02-30", '"""', "'''", "\n", "#",
     'password_file = "a\\u0000b"\n', 'password_env = "NOT_SET_ANYWHERE"\n', "\ud800"]
)  # fmt: skip


@fuzz_settings()
@given(
    text=st.lists(st.one_of(st.text(max_size=30), TOML_PIECES), max_size=30).map("".join),
    secrets=st.booleans(),
)
def test_config_text(text: str, secrets: bool) -> None:
    """Random TOML text (not always valid UTF-8 on disk): a config or a ConfigError."""
    t.config_text(text, secrets)


@pytest.mark.parametrize(
    "text",
    [
        "a = " + "[" * 5000 + "]" * 5000,  # deep nesting: tomllib recurses (RecursionError)
        "a = " + "9" * 5000,  # int literal over Python's 4300-digit limit (ValueError)
        '[node]\nsite = "S"\nline = "L"\nagent_id = "a"\n[mqtt]\nbrokers = [{host = "h"}]\n'
        'password_file = "/tmp/a\\u0000b"\n',  # NUL in a path: Path.stat raises ValueError
    ],
    ids=["deep_nesting", "huge_int", "nul_in_password_file"],
)
def test_config_inputs_that_escaped_the_loader(text: str) -> None:
    t.config_text(text, secrets=True)


# ---- waybills ---------------------------------------------------------------------------------
@fuzz_settings()
@given(
    index=st.integers(0, 1),
    code=st.one_of(
        st.text(max_size=40),
        st.from_regex(r"\A(00)?[0-9]{18}\Z|\A[A-Z]{2}[0-9]{9}[A-Z]{2}\Z|\AZZ[0-9]{9}\Z"),
        st.text(string.ascii_uppercase + string.digits, max_size=20),
    ),
)
def test_waybill_classify(index: int, code: str) -> None:
    t.waybill_code(code, t.SITE_TABLE if index else t.TABLE)


# ---- atheris regression corpus ----------------------------------------------------------------
def corpus_files() -> list[Path]:
    return sorted(p for p in CORPUS.glob("*/*") if p.is_file())


@pytest.mark.parametrize("path", corpus_files(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_corpus_replays(path: Path) -> None:
    """Every input the nightly atheris run ever crashed on, replayed through its target."""
    index, chunks = t.decode(path.read_bytes())
    t.ALL[path.parent.name](index, chunks)
