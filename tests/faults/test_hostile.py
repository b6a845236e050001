"""T19 / D12 / D16: hostile input on a scanner and a scale, mixed with good frames.

The test writes raw bytes to two real ptys (no simulator in between, so every byte is the
test's): a line scanner (CR LF lines) gets barcodes with MQTT wildcards and ``$SYS/...``, NUL,
ANSI escapes, C1 controls and bidi overrides in UTF-8, invalid UTF-8, DEL, over-long codes and
64 KB lines; an SMA scale (continuous, 20-byte ``LF ... CR`` frames) gets NaN, inf, 1e9, 10^9
and -99999.999 kg, -1.234 kg, and control bytes. About 1,000 such frames between good ones.

Our design: a bad frame is a counted, logged reject (``frame_rejected`` with its reason, the
device's ``rejects`` counter, bounded hex), not a reading. Pass criteria:

* the accounting is exact, per device: good frames + hostile frames accepted as plain values +
  rejects (+ negative weights within capacity, which the settle filter holds back as below
  ``min_weight_g``) == frames sent; every good frame arrives, with its exact value;
* topics: the set the backend sees on ``#`` equals the set built from the config ids;
* no log line has a raw C0/C1/DEL/ESC byte (the agent runs with the *console* renderer, the one
  that printed them raw);
* every queued row's payload is <= 4 KB; no code value with a control character, no weight that
  is not a finite number within capacity;
* no exception escaped a driver: both device threads still read, no ``parser_error``, no
  traceback in the log, the agent still runs.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edge_agent.config import load_config
from edge_agent.control import request
from simulators.mosquitto import Mosquitto
from simulators.pty_port import PtyPort
from tests import ledger
from tests.harness import Agent, Subscriber, agent_config, queue_rows

pytestmark = pytest.mark.faults

Factory = Callable[..., Any]
BASE = "edge/v1/T1/L1/test-agent"
CAPACITY_G = 60_000.0
#: Hostile scanner lines: (bytes before CR LF, what must happen: "accept" or a reject reason).
SCAN_HOSTILE: list[tuple[bytes, str]] = [
    (b"A+B#C/D", "accept"),
    (b"$SYS/broker/clients", "accept"),
    (b"+", "accept"),
    (b"#", "accept"),
    (b"edge/v1/T1/L1/test-agent/status", "accept"),
    (b"AB\x00CD", "garbled"),
    (b"\x1b[31mRED\x1b[0m", "garbled"),
    (b"\x1b]0;owned\x07", "garbled"),
    (b"\xc3\x28Z\xfe\xff", "garbled"),
    (b"DEL\x7f", "garbled"),
    ("\u009b31mCSI".encode(), "bad_code"),
    ("ABC\u202eEVIL".encode(), "bad_code"),
    (b"L" * 200, "bad_code"),
]
#: A 64 KB line (every tenth round).
BIG = b"X" * 65536
#: Hostile SMA weights: (status/mode fields, 10-char weight, unit, expected).
SCALE_HOSTILE: list[tuple[str, str, str, str]] = [
    (" 1G  ", "       NaN", "kg ", "malformed"),
    (" 1G  ", "       inf", "kg ", "malformed"),
    (" 1G  ", "       1e9", "kg ", "malformed"),
    (" 1G  ", "1000000000", "g  ", "out_of_range"),
    (" 1G  ", "-99999.999", "kg ", "out_of_range"),
    (" 1G  ", "    -1.234", "kg ", "below_min"),
    (" 1G  ", "\x1b[31m  1.0", "kg ", "garbled"),
    (" 1G  ", "   12\x00.345", "kg ", "garbled"),
]
ROUNDS = 50  # 50 x (13 + 8) hostile frames + 5 big lines = 1,055 hostile, 1,000 good
UNSAFE = re.compile(
    rb"[\x00-\x09\x0b-\x1f\x7f]|\xc2[\x80-\x9f]|\xe2\x80[\xa8-\xae]|\xe2\x81[\xa6-\xa9]"
)


def _sma(fields: str, weight: str, unit: str) -> bytes:
    frame = ("\n" + fields + weight + unit + "\r").encode("latin-1")
    assert len(frame) == 20, frame
    return frame


def _write_all(port: PtyPort, data: bytes, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    view = memoryview(data)
    while view:
        n = port.write(bytes(view[:4096]))
        view = view[n:]
        if not n:
            assert time.monotonic() < deadline, "the agent stopped reading the pty"
            time.sleep(0.002)


def _status(agent_cfg: Path) -> dict[str, Any]:
    reply = request(load_config(agent_cfg).control.path(), {"cmd": "status"})
    assert reply["ok"], reply
    return dict(reply["status"])


def _wait(pred: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return pred()


def test_hostile_frames_are_counted_escaped_bounded_and_never_reach_a_topic(
    tmp_path: Path, broker: Mosquitto, agent_factory: Factory
) -> None:
    scan_port, scale_port = PtyPort(tmp_path / "scan"), PtyPort(tmp_path / "scale")
    scan_port.plug()
    scale_port.plug()
    devices: dict[str, dict[str, Any]] = {
        "s1": {"type": "serial_line_scanner", "port": str(scan_port.link), "terminator": "CRLF"},
        "w1": {"type": "sma_scale", "port": str(scale_port.link), "mode": "continuous",
               "continuous_command": "", "stall_timeout_ms": 0, "max_capacity_g": CAPACITY_G},
    }  # fmt: skip
    cfg = agent_config(tmp_path, broker.port, devices)
    cfg.write_text(cfg.read_text().replace('format = "json"', 'format = "console"'))
    backend = Subscriber(broker.port, topic="#", client_id="hostile-backend")
    agent: Agent = agent_factory(cfg)
    try:
        agent.start(wait_ready=False)
        assert _wait(lambda: " started " in agent.log_path().read_text(), 15), agent.log_text()
        assert _wait(
            lambda: all(d["state"] == "connected" for d in _status(cfg)["devices"].values()), 5
        )

        # the frames, mixed: good ones between the hostile ones
        emitted: list[ledger.Emitted] = []
        want_scan: Counter[str] = Counter()
        want_scale: Counter[str] = Counter()
        accepted_values: list[str] = []
        scan, scale = bytearray(), bytearray()
        n_good = 0
        for r in range(ROUNDS):
            for i, (body, outcome) in enumerate(SCAN_HOSTILE):
                code = f"HG{r:03d}{i:03d}"
                scan += code.encode() + b"\r\n" + body + b"\r\n"
                emitted.append(ledger.Emitted("s1", code, time.time()))
                want_scan[outcome] += 1
                if outcome == "accept":
                    accepted_values.append(body.decode())
            if r % 10 == 0:
                scan += BIG + b"\r\n"
                want_scan["oversize"] += 1
            for i, hostile in enumerate(SCALE_HOSTILE):
                grams = 1000 + 10 * (r * len(SCALE_HOSTILE) + i)  # distinct: no repeats
                scale += _sma(" 1G  ", f"{grams / 1000:10.3f}", "kg ") + _sma(*hostile[:3])
                emitted.append(ledger.Emitted("w1", float(grams), time.time()))
                want_scale[hostile[3]] += 1
            n_good += len(SCAN_HOSTILE) + len(SCALE_HOSTILE)
        sent_hostile = sum(want_scan.values()) + sum(want_scale.values())
        t0 = time.monotonic()
        _write_all(scale_port, bytes(scale))
        _write_all(scan_port, bytes(scan))

        # every good frame and every accepted hostile value arrives
        n_scan_readings = ROUNDS * len(SCAN_HOSTILE) + len(accepted_values)
        n_scale_readings = ROUNDS * len(SCALE_HOSTILE)

        def counts() -> tuple[int, int]:
            got = Counter(r["device"] for _, r in backend.readings())
            return got["s1"], got["w1"]

        assert backend.wait_for(lambda: counts() >= (n_scan_readings, n_scale_readings), 20), (
            counts(),
            (n_scan_readings, n_scale_readings),
        )
        elapsed = time.monotonic() - t0
        time.sleep(0.3)  # anything extra that should not come would come now
        status = _status(cfg)
        readings = [r for _, r in backend.readings()]

        # exact accounting per device: good + accepted hostile + rejects (+ held back) == sent
        rejects = {dev: Counter(d["rejects"]) for dev, d in status["devices"].items()}
        got_values = Counter(r["value"] for r in readings if r["device"] == "s1")
        for value in accepted_values:
            assert got_values[value] >= 1, f"hostile but valid code {value!r} lost"
        assert rejects["s1"] == Counter({k: v for k, v in want_scan.items() if k != "accept"}), (
            rejects["s1"],
            want_scan,
        )
        below_min = want_scale.pop("below_min")
        assert rejects["w1"] == want_scale, (rejects["w1"], want_scale)
        scan_in = len({r["id"] for r in readings if r["device"] == "s1"})
        scale_in = len({r["id"] for r in readings if r["device"] == "w1"})
        assert scan_in == n_scan_readings and scale_in == n_scale_readings
        assert scan_in + scale_in + rejects["s1"].total() + rejects["w1"].total() + below_min == (
            n_good + sent_hostile
        )

        # topics: only config ids, never payload text
        topics = {t for t, _, _ in backend.messages}
        expected = {f"{BASE}/status", f"{BASE}/alarm", f"{BASE}/batch"}
        for dev in ("s1", "w1"):
            expected |= {f"{BASE}/reading/{dev}", f"{BASE}/device/{dev}/state"}
        assert topics <= expected, topics - expected
        assert {f"{BASE}/status", f"{BASE}/device/s1/state", f"{BASE}/device/w1/state"} <= topics

        # values: no code with a control character, no weight that is not a finite number
        # within capacity; stored rows bounded
        db = tmp_path / "state" / "queue.db"
        rows = queue_rows(db)
        biggest = max(len(json.dumps(r["payload"], separators=(",", ":"))) for r in rows)
        assert biggest <= 4096, f"a queue row of {biggest} bytes"
        for reading in readings:
            v = reading["value"]
            if reading["kind"] == "weight":
                assert isinstance(v, float) and math.isfinite(v) and 0 <= v <= CAPACITY_G, reading
            else:
                assert isinstance(v, str) and v.isprintable() and len(v.encode()) <= 128, reading

        # logs: escaped, no traceback, nothing escaped a driver, still running and reading
        log = agent.log_path().read_bytes()
        bad_lines = [ln for ln in log.splitlines() if UNSAFE.search(ln)]
        assert not bad_lines, bad_lines[:3]
        assert b"Traceback" not in log and b"parser_error" not in log
        assert log.count(b"frame_rejected") == sum(rejects["s1"].values()) + sum(
            rejects["w1"].values()
        )
        assert all(d["state"] == "connected" for d in status["devices"].values()), status
        assert agent.proc is not None and agent.proc.poll() is None
        agent.stop()
        ledger.check(
            "T19 hostile input",
            backend,
            db,
            emitted=emitted,
            max_dup_ratio=0.0,
            hostile_sent=sent_hostile,
            good_sent=n_good,
            rejects={dev: dict(c) for dev, c in rejects.items()},
            below_min=below_min,
            accepted_hostile=len(accepted_values),
            topics=len(topics),
            biggest_row_bytes=biggest,
            log_bytes=len(log),
            seconds=round(elapsed, 2),
        )
    finally:
        agent.stop()
        backend.close()
        scan_port.close()
        scale_port.close()


@pytest.mark.parametrize("fmt", ["console", "json"])
def test_log_renderers_escape_control_characters(
    fmt: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Device text can reach a log value (an MT-SICS reply in ``scale_command``, an error
    message): neither renderer may print it raw. Before the escaping processor the console
    renderer wrote ESC, NUL, C1 and bidi characters through unchanged."""
    import structlog

    from edge_agent import logs

    hostile = "A\x1b[31mB\x00C\u009b31m\u202eD\rE\tF\x7f"
    try:
        logs.setup("info", fmt)
        structlog.get_logger("drivers").warning(
            "scale_command" + "\x1b[2J", reply=hostile, raw=hostile.encode(), items=[hostile]
        )
    finally:
        structlog.reset_defaults()
    out = capsys.readouterr().err.encode()
    assert out.count(b"\n") == 1 and out.endswith(b"\n"), out
    assert not UNSAFE.search(out), out
    assert b"\\x1b[31m" in out or b"\\u001b[31m" in out  # escaped, still readable
