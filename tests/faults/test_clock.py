"""T9 (docs/reliability.md (c)): the wall clock jumps -1 h, back, then +1 day while readings flow.

The real daemon runs under libfaketime (Debian package ``faketime``) with
``FAKETIME_TIMESTAMP_FILE`` rewritten by the test (``FAKETIME_NO_CACHE=1``: read on every call)
and ``DONT_FAKE_MONOTONIC=1``, so only the wall clock jumps, as under an NTP step or an
operator's ``date -s``. Measured and asserted:

* the jumps took effect: readings carry ``ts`` 1 h in the past and 1 day in the future, while
  ``mono_ns`` runs on undisturbed (strictly increasing, spanning only the run's real length)
  and every reading carries the machine's ``boot_id``;
* ids: unique, well-formed UUIDv7, and strictly increasing in commit order *across the
  backward step* (the id clock never goes below its last millisecond, RFC 9562 6.2);
* per-device ``seq`` strictly increasing in commit order; the ledger: every emitted reading
  received, ``missing == 0``, no duplicates (nothing was re-sent);
* the MQTT connection survives every jump (keepalive runs on the monotonic clock): no
  ``mqtt_disconnected``, one ``mqtt_connected``;
* the watchdog pings keep their half-period across the jumps;
* the device reconnect backoff: the scanner is unplugged and the clock jumps +1 day while
  the supervisor is backing off; the first reading after the replug arrives within 1.5 s
  (backoff cap 0.5 s + the document's 1 s tolerance);
* SIGTERM still stops the agent cleanly within 2 s after the jumps.

libfaketime 0.9.10 (Debian 12) with ``DONT_FAKE_MONOTONIC`` breaks ``clock_nanosleep`` with
``TIMER_ABSTIME``, which CPython >= 3.11 uses for ``time.sleep`` (wolfcw/libfaketime#426:
``OSError: [Errno 22] Invalid argument``). The agent's own loops wait on events, queues and
select, never ``time.sleep``, but paho sleeps in its reconnect wait; so the agent runs with a
``sitecustomize`` that makes ``time.sleep`` an ``Event().wait`` (same monotonic semantics),
an environment fix for the tool, not a change to the code under test.

Adapted numbers: each clock phase lasts 2 s (the suite's time budget; the document gives no
duration), at the usual 20 readings/s.
"""

from __future__ import annotations

import calendar
import itertools
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from edge_agent import reading
from simulators.mosquitto import Mosquitto
from simulators.serial_line_scanner import ScannerSim
from tests.harness import Agent, Subscriber, agent_config, queue_rows
from tests.ledger import Emitted, check
from tests.test_systemd import NotifySocket, notify_env, without_service_env

pytestmark = pytest.mark.faults

DEVICE = "scan_1"
LIBFAKETIME = next(
    (
        p
        for p in (
            Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"),
            Path("/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1"),
            Path("/usr/lib/faketime/libfaketime.so.1"),
            Path("/usr/local/lib/faketime/libfaketime.so.1"),
        )
        if p.exists()
    ),
    None,
)
SITECUSTOMIZE = '''"""time.sleep without clock_nanosleep(TIMER_ABSTIME): libfaketime#426."""
import threading
import time


def _sleep(seconds: float) -> None:
    if seconds < 0:
        raise ValueError("sleep length must be non-negative")
    threading.Event().wait(seconds)


time.sleep = _sleep
'''
#: Seconds the wall clock stays at each offset (-1 h, real time, +1 day).
PHASE_S = 2.0
HOUR, DAY = 3600.0, 86400.0
WATCHDOG_S = 2.0
SLACK_S = 0.25


def set_offset(rc: Path, offset: str) -> None:
    """Point the faked wall clock at real time + ``offset`` (atomically: never a half file)."""
    tmp = rc.with_suffix(".tmp")
    tmp.write_text(offset + "\n")
    os.replace(tmp, rc)


def uuid7_ms(u: str) -> int:
    return int(u.replace("-", "")[:12], 16)


def ts_seconds(ts: str) -> float:
    return calendar.timegm(time.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S")) + float(ts[19:-1] or 0)


@pytest.mark.skipif(LIBFAKETIME is None, reason="libfaketime is not installed (package faketime)")
def test_wall_clock_jumps_change_nothing_but_ts(
    tmp_path: Path,
    broker: Mosquitto,
    backend: Subscriber,
    scanner: Callable[..., ScannerSim],
    agent_factory: Callable[..., Agent],
) -> None:
    assert LIBFAKETIME is not None
    sim = scanner("scan1", terminator="CR", aim=False, rate=20, seed=91)
    device = {
        "type": "serial_line_scanner",
        "port": str(sim.port.link),
        "framing": "terminator",
        "terminator": "CR",
        "aim_ids": False,
    }
    rc = tmp_path / "faketime.rc"
    set_offset(rc, "+0")
    fix = tmp_path / "faketime-fix"
    fix.mkdir()
    (fix / "sitecustomize.py").write_text(SITECUSTOMIZE)
    notify = NotifySocket(str(tmp_path / "notify.sock"))
    env = {
        **notify_env(notify),
        "LD_PRELOAD": str(LIBFAKETIME),
        "FAKETIME_TIMESTAMP_FILE": str(rc),
        "FAKETIME_NO_CACHE": "1",
        "DONT_FAKE_MONOTONIC": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(fix), os.environ.get("PYTHONPATH")])),
    }
    cfg = agent_config(tmp_path, broker.port, {DEVICE: device})
    agent = without_service_env(agent_factory(cfg, env), env)
    try:
        agent.start()
        assert agent.proc is not None
        t0 = time.monotonic()
        sim.start()
        time.sleep(1.5)
        # -1 h while the scanner is unplugged: the supervisor's backoff spans the step back
        reconnect_s = unplug_across_jump(sim, backend, rc, "-1h")
        time.sleep(PHASE_S)
        set_offset(rc, "+0")  # +1 h, back to real time
        time.sleep(PHASE_S)
        set_offset(rc, "+1d")
        time.sleep(PHASE_S)
        sim.stop()
        emitted = [Emitted(DEVICE, t.value or "", t.t) for t in sim.truth if t.kind == "barcode"]
        want = {e.value for e in emitted}
        assert backend.wait_for(lambda: want <= {r["value"] for _, r in backend.readings()}, 10)
        t_term = time.monotonic()
        agent.proc.send_signal(signal.SIGTERM)
        exit_code = agent.proc.wait(10)
        stop_s = time.monotonic() - t_term
        t_end = time.monotonic()
    finally:
        agent.stop()
        notify.close()

    db = tmp_path / "state" / "queue.db"
    rows = sorted(queue_rows(db), key=lambda r: r["n"])
    payloads = [r["payload"] for r in rows]
    sent_at = {e.value: e.t for e in emitted}
    # the jumps took effect in the agent (else this test proves nothing) ...
    offsets = [ts_seconds(p["ts"]) - sent_at[p["value"]] for p in payloads]
    back = sum(abs(o + HOUR) < 60 for o in offsets)
    ahead = sum(abs(o - DAY) < 60 for o in offsets)
    assert back >= 10 and ahead >= 10, sorted({round(o) for o in offsets})
    # ... and the monotonic clock did not move with them
    mono = [p["mono_ns"] for p in payloads]
    assert all(a < b for a, b in itertools.pairwise(mono))
    assert (mono[-1] - mono[0]) / 1e9 <= t_end - t0
    assert {p["boot_id"] for p in payloads} == {reading.boot_id()}
    # ids: unique, increasing in commit order across the step back (the id clock held its
    # last millisecond while the wall clock was an hour behind); seq likewise
    ids = [r["id"] for r in rows]
    assert len(set(ids)) == len(ids) and ids == sorted(ids), "ids went back with the clock"
    held = sum(
        uuid7_ms(i) - ts_seconds(p["ts"]) * 1000 > 60_000
        for i, p in zip(ids, payloads, strict=True)
    )
    assert held >= 10
    seqs = [r["seq"] for r in rows if r["device"] == DEVICE]
    assert all(a < b for a, b in itertools.pairwise(seqs))
    # the connection and the watchdog did not notice
    events = agent.events()
    names = [e["event"] for e in events]
    assert names.count("mqtt_disconnected") == 0 and names.count("mqtt_connected") == 1
    pings = notify.times("WATCHDOG=1")
    gaps = [b - a for a, b in itertools.pairwise(p for p in pings if p >= t0)]
    assert gaps and max(gaps) <= WATCHDOG_S / 2 + SLACK_S, gaps
    assert reconnect_s <= 1.5
    assert exit_code == 0 and stop_s <= 2.0
    check(
        "T9 clock jumps",
        backend,
        db,
        emitted=emitted,
        max_dup_ratio=0.0,
        ts_minus_1h=back,
        ts_plus_1d=ahead,
        ids_held_at_last_ms=held,
        mqtt_disconnects=names.count("mqtt_disconnected"),
        watchdog_max_gap_s=round(max(gaps), 3),
        reconnect_after_replug_s=round(reconnect_s, 3),
        stop_s=round(stop_s, 3),
    )


def unplug_across_jump(sim: ScannerSim, backend: Subscriber, rc: Path, jump: str) -> float:
    """Unplug 0.6 s, jumping the clock to ``jump`` while the supervisor backs off.

    Returns seconds from the replug to the first reading emitted after it at the backend.
    """
    done = threading.Event()
    t: dict[str, float] = {}

    def pull() -> None:
        sim.unplug(0.6)
        t["replug"] = time.monotonic()
        done.set()

    n_before = len(sim.truth)
    threading.Thread(target=pull, daemon=True).start()
    time.sleep(0.3)
    set_offset(rc, jump)
    assert done.wait(5)

    def arrived() -> bool:
        after = {x.value for x in sim.truth[n_before:] if x.kind == "barcode"}
        return bool(after & {r["value"] for _, r in backend.readings()})

    assert backend.wait_for(arrived, 10)
    return time.monotonic() - t["replug"]


# ---- the id clock, in process -----------------------------------------------------------------
def test_uuid7_stays_unique_and_increasing_when_the_wall_clock_steps_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A patched wall clock: steps back 1 h, freezes for 10,000 ids, jumps ahead a day."""
    monkeypatch.setattr(reading, "_UUID7_CLOCK", reading._Uuid7Clock())
    now = [1_790_000_000_000_000_000]
    monkeypatch.setattr(time, "time_ns", lambda: now[0])
    ids: list[str] = []

    def take(n: int, step_ns: int = 0) -> None:
        for _ in range(n):
            ids.append(reading.uuid7())
            now[0] += step_ns

    take(100, 1_000_000)
    top = uuid7_ms(ids[-1])
    now[0] -= int(HOUR * 1e9)  # NTP steps back
    take(10_000)  # frozen clock: the 12-bit counter overflows into the next milliseconds
    assert all(uuid7_ms(i) >= top for i in ids[100:])
    now[0] += int(DAY * 1e9)
    take(100, 1_000_000)
    assert uuid7_ms(ids[-1]) == now[0] // 1_000_000 - 1  # follows the clock forward again
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    assert all(uuid.UUID(i).version == 7 for i in ids)
