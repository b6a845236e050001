"""Fuzz targets: every driver's framer + parser path, the config loader and the waybill table.

Each target takes a config index and a list of chunks (the reads one after another) and runs
them through the same code the daemon runs, with the port replaced by the chunks:

* drivers: the driver's own ``_read_events`` (framer, router/screen, settle filter) over a fake
  port, then ``Driver._take`` (the base class's reject path) for every event; a last empty read
  after the inter-byte timeout flushes what is left. A registered byte-stream driver without a
  hand-written target below gets one derived from its declared framer and parse step, with its
  default config (:func:`derived_target`), so a new serial device is fuzzed without a new file.
  Only ``FrameError`` is documented for a parser and the base class turns it into a counted
  reject, so *nothing* may escape.
* every reading is checked (:func:`check_reading`, D16 at each driver's documented limits).
* ``config``: TOML text through ``load_config``: only ``ConfigError`` naming the file.
* ``waybill``: ``WaybillTable.classify`` with the built-in table and with site rules.

:func:`decode` turns one flat byte string into (config index, chunks) for atheris, so the two
front ends (hypothesis in ``tests/faults/test_fuzz.py``, atheris in ``python -m tests.fuzz``)
share the targets.
"""

from __future__ import annotations

import json
import math
import random
import struct
import tempfile
import time
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import usb.core

from drivers import DRIVERS, driver_class
from drivers.base import Driver
from drivers.cognex_dataman import CognexDatamanConfig, CognexDatamanDriver
from drivers.common.framing import Event
from drivers.common.stream import StreamDriver
from drivers.datalogic import DatalogicConfig, DatalogicDriver
from drivers.hid_scanner.config import HidScannerConfig
from drivers.hid_scanner.driver import HidScannerDriver
from drivers.modbus_scale import ModbusScaleConfig, ModbusScaleDriver
from drivers.modbus_scale.frames import classify_unanswered, complete, crc16, sound_tail
from drivers.mtsics_scale import MtSicsScaleConfig, MtSicsScaleDriver
from drivers.serial_line_scanner import SerialLineScannerConfig, SerialLineScannerDriver
from drivers.sick_clv import SickClvConfig, SickClvDriver
from drivers.sma_scale import SmaScaleConfig, SmaScaleDriver
from drivers.toledo_continuous import ToledoContinuousConfig, ToledoContinuousDriver
from edge_agent.config import load_config
from edge_agent.errors import ConfigError
from edge_agent.reading import Decoded, Kind
from edge_agent.waybill import INVALID, WaybillConfig, WaybillTable

#: What one run gives: readings, and the reasons of rejects, in order.
Outcome = list[Decoded | str]
GS = "\x1d"
WEIGHT_UNITS = frozenset({"g", "kg", "mg", "t", "lb", "oz"})


class ParserBugError(AssertionError):
    """A parser raised something other than FrameError (the base class logged ``parser_error``)."""


class Quiet:
    """A logger that drops everything (a fuzz run rejects thousands of frames a second).

    ``exception()`` is how ``Driver._take`` reports a parser that raised anything but
    FrameError (a ``parser_error`` reject): for the fuzzer that is a crash, so it raises.
    """

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *a, **k: None

    def exception(self, event: str, **kw: object) -> None:
        msg = f"{event}: {kw}"
        raise ParserBugError(msg)


class FakeLink:
    """Stands in for ``Link``: each ``read()`` returns the next chunk, then nothing."""

    generation = 0

    def __init__(self, chunks: Sequence[bytes]) -> None:
        self.chunks = list(chunks)
        self.written: list[bytes] = []

    def read(self, timeout: float = 0.0, wake: int = -1) -> bytes:
        del timeout, wake
        return self.chunks.pop(0) if self.chunks else b""

    def write(self, data: bytes) -> None:
        self.written.append(data)


# ---- checks ------------------------------------------------------------------------------------
#: Bidi overrides/isolates and line separators (Trojan Source), kept out of codes (D16).
BIDI = frozenset("\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def text_ok(value: str) -> bool:
    """No control character but GS (GS1 FNC1; C0, DEL and C1 refused), no bidi override, no
    unassigned, surrogate or private-use code point: nothing a terminal or a log acts on."""
    return all(
        ch == GS or (ch not in BIDI and unicodedata.category(ch) not in ("Cc", "Cs", "Co", "Cn"))
        for ch in value
    )


def check_reading(d: Decoded, max_value_bytes: int, capacity_g: tuple[float, float]) -> None:
    """D16. Raises AssertionError naming what is wrong.

    Args:
        d: a reading the driver returned.
        max_value_bytes: the longest code value (``Driver.MAX_CODE_BYTES``, 128 by default).
        capacity_g: the range a published weight must lie in.
    """
    assert isinstance(d.raw, bytes) and d.raw, f"reading without raw bytes: {d!r}"
    assert len(d.raw) <= Driver.MAX_RAW_BYTES, f"{len(d.raw)}-byte raw kept"
    if d.kind == Kind.BARCODE:
        assert isinstance(d.value, str) and d.value, f"empty barcode: {d!r}"
        size = len(d.value.encode("utf-8", "surrogatepass"))
        assert size <= max_value_bytes, f"{size}-byte barcode > {max_value_bytes}: {d.raw!r}"
        assert text_ok(d.value), f"control or format character in barcode {d.value!r}"
    elif d.kind == Kind.WEIGHT:
        assert isinstance(d.value, float) and math.isfinite(d.value), f"weight {d.value!r}"
        low, high = capacity_g
        assert low <= d.value <= high, f"weight {d.value} g outside [{low}, {high}]: {d.raw!r}"
        assert d.unit in WEIGHT_UNITS, f"unit {d.unit!r}"
        assert isinstance(d.stable, bool)
    else:
        assert d.kind in (Kind.NOREAD, Kind.HEARTBEAT) and d.value is None, repr(d)
    for name in ("aim", "symbology", "check"):
        field = getattr(d, name)
        assert field is None or (isinstance(field, str) and text_ok(field)), (name, field)


def _flat(out: Outcome) -> list[object]:
    return [x if isinstance(x, str) else (x.kind, x.value, x.gate, x.raw) for x in out]


# ---- the driver path ---------------------------------------------------------------------------
def _collect(drv: Driver[Any], events: Sequence[Event | Decoded], out: Outcome) -> None:
    for ev in events:
        out.extend(drv._take(ev))


def _quiet(drv: Driver[Any], out: Outcome) -> None:
    drv.log = Quiet()
    drv.on_reject = lambda _dev, reason, _data: out.append(reason)


def _serial_run(drv: Any, chunks: Sequence[bytes]) -> Outcome:
    """A serial driver (``_link`` + ``_framer``) through its own ``_read_events``."""
    out: Outcome = []
    _quiet(drv, out)
    drv._link = FakeLink(chunks)
    for _ in chunks:
        _collect(drv, drv._read_events(0.0), out)
    drv._framer._last = -math.inf  # the line then went silent for longer than the timeout
    _collect(drv, drv._read_events(0.0), out)
    return out


def _tunnel_run(drv: Any, chunks: Sequence[bytes]) -> Outcome:
    out: Outcome = []
    _quiet(drv, out)
    drv._link = FakeLink(chunks)
    for _ in chunks:
        _collect(drv, drv._read_events(0.0), out)
    drv._framer._last = -math.inf
    _collect(drv, drv._read_events(0.0), out)
    return out


def _hid_run(drv: HidScannerDriver, chunks: Sequence[bytes]) -> Outcome:
    """HID reads: the framer judges key timeouts by ``now``, so give it a steady clock."""
    out: Outcome = []
    _quiet(drv, out)
    framer = drv._framer
    for i, chunk in enumerate(chunks):
        _collect(drv, framer.feed(chunk, i * 0.001), out)
    _collect(drv, framer.expire(math.inf), out)
    # and the driver's own timeout path once (an idle read)
    drv._dev = _IdleUsb()
    _collect(drv, drv._read_events(0.01), out)
    return out


class _IdleUsb:
    def read(self, *_args: object) -> bytes:
        raise usb.core.USBTimeoutError("timeout", errno=110)


@dataclass(frozen=True)
class DriverTarget:
    """A driver, the configs it is fuzzed with, and how to run chunks through it."""

    name: str
    configs: tuple[Any, ...]
    make: Callable[[Any], Driver[Any]]
    run: Callable[[Any, Sequence[bytes]], Outcome]
    limits: Callable[[Any], tuple[int, tuple[float, float]]]
    #: Chunks of this many bytes keep the outcome equal to one whole read (HID: whole reports).
    split_unit: Callable[[Any], int] = lambda _cfg: 1

    def __call__(self, index: int, chunks: Sequence[bytes]) -> Outcome:
        cfg = self.configs[index % len(self.configs)]
        out = self.run(self.make(cfg), chunks)
        size, capacity = self.limits(cfg)
        for item in out:
            if isinstance(item, Decoded):
                check_reading(item, size, capacity)
            else:
                assert isinstance(item, str) and item, f"reject without a reason: {item!r}"
                assert item != "parser_error", "a parser raised (see ParserBugError)"
        return out

    def check_split(self, index: int, chunks: Sequence[bytes]) -> None:
        """Run ``chunks`` as reads, then as one read: the same readings and rejects.

        Only when every read is a whole number of the driver's units (HID: reports); other
        reads are still run and checked, and must not raise.
        """
        chunks = [c for c in chunks if c]
        split = self(index, chunks)
        unit = self.split_unit(self.configs[index % len(self.configs)])
        if all(len(c) % unit == 0 for c in chunks):
            whole = self(index, [b"".join(chunks)] if chunks else [])
            assert _flat(whole) == _flat(split), "cutting the stream into reads changed it"


def _cfg(model: Any, **kw: object) -> Any:
    return model.model_validate(kw)


SERIAL = "loop://"
SCALE_CAP = (0.0, 30_000.0)


def _scale_limits(cfg: Any) -> tuple[int, tuple[float, float]]:
    return 0, (0.0, cfg.max_capacity_g)  # published weights are settled, >= min_weight_g >= 0


def _frame_limits(cfg: Any) -> tuple[int, tuple[float, float]]:
    return min(cfg.max_frame, Driver.MAX_CODE_BYTES), (0.0, 0.0)


TARGETS: dict[str, DriverTarget] = {
    "serial_line_scanner": DriverTarget(
        "serial_line_scanner",
        tuple(
            _cfg(SerialLineScannerConfig, type="serial_line_scanner", port=SERIAL, **kw)
            for kw in (
                {},
                {"framing": "stx_etx", "aim_ids": True, "max_frame": 64},
                {"terminator": "CR", "prefix": "<", "suffix": ">", "noread": ["NR", ""]},
                {"terminator": "LF", "aim_ids": True, "max_frame": 8},
            )
        ),
        lambda cfg: SerialLineScannerDriver("f", cfg),
        _serial_run,
        _frame_limits,
    ),
    "sick_clv": DriverTarget(
        "sick_clv",
        tuple(
            _cfg(SickClvConfig, type="sick_clv", port=SERIAL, **kw)
            for kw in (
                {},
                {"header_fields": ["gate", "count"], "max_frame": 64},
                {"header_fields": ["gate"], "heartbeat_publish": True, "separator": ","},
                {"header_fields": ["count"], "noread": "", "dedup_window": 0},
            )
        ),
        lambda cfg: SickClvDriver("f", cfg),
        _tunnel_run,
        _frame_limits,
    ),
    "cognex_dataman": DriverTarget(
        "cognex_dataman",
        tuple(
            _cfg(CognexDatamanConfig, type="cognex_dataman", port=SERIAL, **kw)
            for kw in (
                {},
                {"index_field": True, "checksum_span": "payload", "max_frame": 64},
                {"extended_base64": True, "noread_mode": "empty", "terminator": "CR"},
                {"noread_mode": "none", "terminator": "LF", "index_field": True},
            )
        ),
        lambda cfg: CognexDatamanDriver("f", cfg),
        _tunnel_run,
        _frame_limits,
    ),
    "datalogic": DriverTarget(
        "datalogic",
        tuple(
            _cfg(DatalogicConfig, type="datalogic", port=SERIAL, **kw)
            for kw in (
                {},
                {"header": "none", "terminator": "CR", "max_frame": 64},
                {"terminator": "ETX", "multiread_text": "MULTI", "multiread_separator": ";"},
                {"terminator": "LF", "separator": "||", "local_noread": "NR"},
            )
        ),
        lambda cfg: DatalogicDriver("f", cfg),
        _tunnel_run,
        _frame_limits,
    ),
    "hid_scanner": DriverTarget(
        "hid_scanner",
        tuple(
            _cfg(HidScannerConfig, type="hid_scanner", vid=0x0C2E, pid=0x0B01, **kw)
            for kw in (
                {},
                {"aim_ids": True, "max_code_len": 16, "terminator": "tab"},
                {"mode": "pos"},
                {"mode": "pos", "pos_strip_cr": False, "max_code_len": 60, "noread": ["NR"]},
            )
        ),
        lambda cfg: HidScannerDriver("f", cfg, backend=object()),
        _hid_run,
        lambda cfg: (min(4 * cfg.max_code_len, Driver.MAX_CODE_BYTES), (0.0, 0.0)),
        lambda cfg: 64 if cfg.mode == "pos" else 8,
    ),
    "mtsics_scale": DriverTarget(
        "mtsics_scale",
        tuple(
            _cfg(MtSicsScaleConfig, type="mtsics_scale", port=SERIAL, **kw)
            for kw in ({"max_capacity_g": 30_000}, {"max_capacity_g": 600, "min_weight_g": 0})
        ),
        lambda cfg: MtSicsScaleDriver("f", cfg),
        _serial_run,
        _scale_limits,
    ),
    "sma_scale": DriverTarget(
        "sma_scale",
        tuple(
            _cfg(SmaScaleConfig, type="sma_scale", port=SERIAL, **kw)
            for kw in (
                {"max_capacity_g": 30_000},
                {"max_capacity_g": 1000, "mode": "continuous", "min_weight_g": 0},
            )
        ),
        lambda cfg: SmaScaleDriver("f", cfg),
        _serial_run,
        _scale_limits,
    ),
    "toledo_continuous": DriverTarget(
        "toledo_continuous",
        tuple(
            _cfg(ToledoContinuousConfig, type="toledo_continuous", port=SERIAL, **kw)
            for kw in (
                {"max_capacity_g": 30_000},
                {"max_capacity_g": 5000, "checksum": False, "tare_field": False},
            )
        ),
        lambda cfg: ToledoContinuousDriver("f", cfg),
        _serial_run,
        _scale_limits,
    ),
}


def _generic_limits(cfg: Any) -> tuple[int, tuple[float, float]]:
    size = min(getattr(cfg, "max_frame", Driver.MAX_CODE_BYTES), Driver.MAX_CODE_BYTES)
    return size, (0.0, float(getattr(cfg, "max_capacity_g", 0.0)))


def derived_target(kind: str) -> DriverTarget | None:
    """A target for registered driver ``kind`` from its framer and ``decode`` (None: not a
    byte-stream driver, or its config has required keys beyond ``port``: write a target)."""
    try:
        cls = driver_class(kind)
    except (ImportError, AttributeError):  # a registry line without its module: the checklist says
        return None
    if not issubclass(cls, StreamDriver):
        return None
    try:
        cfg = cls.Config.model_validate({"type": kind, "port": SERIAL})
    except ValueError:
        return None
    return DriverTarget(kind, (cfg,), lambda c: cls("f", c), _serial_run, _generic_limits)


#: The registered drivers whose target is derived (tests/test_new_device_checklist.py runs them).
DERIVED = {k: t for k in sorted(DRIVERS) if k not in TARGETS and (t := derived_target(k))}
TARGETS.update(DERIVED)


# ---- Modbus: response ADUs, as the packet hook sees them and as pymodbus hands them over ----
MODBUS_CONFIGS = tuple(
    _cfg(ModbusScaleConfig, type="modbus_scale", **kw)
    for kw in (
        # every key at the RegisterMap default, the map this corpus was recorded with (the
        # keys that set the weight's scale are required in a config now)
        {
            "port": SERIAL,
            "units": [1, 2],
            "registers": {"weight_register": 0, "unit": "kg", "decimals": 0},
        },
        {
            "transport": "tcp",
            "host": "127.0.0.1",
            "registers": {
                "weight_register": 0,
                "weight_type": "float32",
                "word_order": "little",
                "unit": "g",
                "status_register": 2,
                "stable_bit": 0,
                "overload_bit": 1,
                "under_zero_bit": 2,
            },
        },
        {
            "port": SERIAL,
            "units": [1],
            "min_weight_g": 0,
            "registers": {
                "weight_register": 0,
                "unit": "kg",
                "weight_type": "int16",
                "decimals_register": 1,
                "scale": 0.5,
            },
        },
    )
)


def _fix_framing(body: bytes, cfg: ModbusScaleConfig) -> bytes:
    """Make ``body`` (unit, PDU...) a well-framed ADU so the fuzzer reaches the registers."""
    if cfg.transport == "rtu":
        return body + crc16(body).to_bytes(2, "little")
    return struct.pack(">HHH", 1, 0, len(body)) + body


def modbus(index: int, chunks: Sequence[bytes]) -> Outcome:
    """Each chunk as the bytes received for one poll; with a framing fix-up on odd chunks."""
    cfg = MODBUS_CONFIGS[index % len(MODBUS_CONFIGS)]
    drv = ModbusScaleDriver("f", cfg)
    out: Outcome = []
    _quiet(drv, out)
    count = cfg.registers.count
    for i, rx in enumerate(chunks):
        unit = cfg.units[i % len(cfg.units)]
        st = drv.units[unit]
        frame = _fix_framing(rx, cfg) if i % 2 else rx
        reason = classify_unanswered(frame, unit, cfg.transport, count)
        assert reason in ("timeout", "wrong_unit", "noise", "short", "crc", "garbled"), reason
        assert isinstance(complete(frame, cfg.transport, count), bool)
        tail = sound_tail(frame, unit, cfg.transport, count)
        assert tail is None or tail in frame
        _collect(drv, drv._answer(st, time.monotonic(), tail or frame), out)
    low = -cfg.min_weight_g
    for item in out:
        if isinstance(item, Decoded):
            check_reading(item, 0, (low, cfg.max_weight_g))
            assert item.channel in cfg.units or cfg.transport == "tcp", item.channel
    return out


# ---- config loader and waybills ------------------------------------------------------------------
_CONFIG_DIR = Path(tempfile.mkdtemp(prefix="edge-fuzz-config-"))


def config_text(text: str, secrets: bool) -> None:
    """``load_config`` on ``text``: a config, or ConfigError naming the file; nothing else."""
    path = _CONFIG_DIR / "line.toml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        cfg = load_config(path, secrets=secrets)
    except ConfigError as err:
        assert str(err).startswith(f"{path}:"), f"error does not name the file: {err}"
        return
    assert cfg.source == path


def toml(value: object, top: bool = True) -> str:
    """``value`` as TOML, tables inline (so any tree renders), keys quoted when not bare."""
    if isinstance(value, dict):
        items = [f"{_key(k)} = {toml(v, False)}" for k, v in value.items()]
        return "\n".join(items) + "\n" if top else "{" + ", ".join(items) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(toml(v, False) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))


def _key(key: str) -> str:
    return (
        key
        if key and all(c.isascii() and (c.isalnum() or c in "_-") for c in key)
        else (json.dumps(key))
    )


def config_bytes(index: int, chunks: Sequence[bytes]) -> Outcome:
    """Atheris form: the bytes as the file's contents (not necessarily UTF-8)."""
    path = _CONFIG_DIR / "raw.toml"
    path.write_bytes(b"".join(chunks))
    try:
        load_config(path, secrets=bool(index % 2))
    except ConfigError as err:
        assert str(err).startswith(f"{path}:"), f"error does not name the file: {err}"
    return []


TABLE = WaybillTable()


def waybill_code(code: str, table: WaybillTable = TABLE) -> None:
    """``classify`` never raises; valid exactly when a carrier is named, else a reason."""
    got = table.classify(code)
    assert got.valid == (got.carrier != INVALID) == (got.reason is None), got
    if got.valid:
        assert got.carrier in table.carriers and got.role in ("waybill", "logistic"), got
        assert all("!" <= ch <= "~" for ch in code), f"valid code with bad characters {code!r}"


SITE_TABLE = WaybillTable.from_config(
    WaybillConfig.model_validate(
        {
            "rules": [
                {"carrier": "site", "pattern": r"^ZZ(?P<check>\d{9})$", "check": "upu_s10"},
                {"carrier": "lot", "pattern": r"^(?P<check>\d{2,20})$", "check": "gs1_mod10"},
            ],
            "disable": ["deppon"],
        }
    )
)


def waybill(index: int, chunks: Sequence[bytes]) -> Outcome:
    table = SITE_TABLE if index % 2 else TABLE
    for chunk in chunks:
        waybill_code(chunk.decode("utf-8", "replace"), table)
        waybill_code(chunk.decode("latin-1"), table)
    return []


#: Every target by name, in one signature: (config index, chunks) -> outcome.
ALL: dict[str, Callable[[int, Sequence[bytes]], Outcome]] = {
    **TARGETS,
    "modbus_scale": modbus,
    "config": config_bytes,
    "waybill": waybill,
}


def decode(data: bytes) -> tuple[int, list[bytes]]:
    """One flat input -> (config index, chunks): byte 0 picks the config, byte 1 seeds the cuts."""
    if len(data) < 2:
        return 0, [data] if data else []
    rng = random.Random(data[1])
    body, chunks, pos = data[2:], [], 0
    while pos < len(body):
        step = rng.choice((1, 2, 3, 8, 17, 64, 200))
        chunks.append(body[pos : pos + step])
        pos += step
    return data[0], chunks
