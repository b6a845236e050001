"""The measurements. Each function runs one repeat of one scenario and returns a flat dict.

The same protocol runs for edge-agent and for the baseline agent, so every figure has a
same-run counterpart:

* :func:`drain`: a pre-filled queue, 8 idle scanners connected, the agent starts; time from
  READY until every reading is PUBACKed (the agent's own queue says so) *and* the subscriber
  has received it (readings inside batches counted).
* :func:`saturation`: scanners written as fast as the agent reads them; committed, PUBACKed
  and received readings per second over a window after a warm-up; then SIGTERM under load.
* :func:`line_session`: 8 scanners; idle CPU and wake-ups with no traffic; at each paced rate
  (200 and 1,000 readings/s by default) latency from the frame written to the pty to the
  subscriber's receipt, CPU and context switches per reading; SIGTERM at line rate.
* :func:`paho_raw` and :func:`mosquitto_pub`: the client libraries alone, for reference.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.agents import ROOT, AgentProc, EdgeAgent, NaiveAgent
from bench.common import Broker, CpuMark, Receiver, RssSampler, percentile, status_kb
from bench.floor import FloorAgent
from bench.lines import Line, Pacer, Pump
from bench.node_red import NodeRedAgent
from bench.prefill import copy_db


@dataclass
class Settings:
    """Sizes and durations of one invocation (see ``bench/cli.py`` for the defaults)."""

    quick: bool
    repeats: int
    sizes: list[int]
    baseline_sizes: list[int]
    devices: int
    live_devices: int
    warm_s: float
    live_s: float
    idle_s: float
    rates: list[float]
    rate_s: float
    fault_rate: float
    outage_s: float
    fault_pre_s: float
    peers: list[str]
    node_red_cache: Path
    paho_n: int
    paho_batch_n: int
    paho_batch: int
    mosquitto_pub_n: int
    max_bytes: int
    gather_ms: float | None = None  # edge-agent [queue] gather_ms (None: the shipped default)


@dataclass
class Ctx:
    """What every scenario needs."""

    settings: Settings
    workdir: Path
    broker: Broker
    say: Callable[[str], None]


def _per_s(n: int, seconds: float) -> float | None:
    """``n`` per second, or None when the clock readings leave no time (a loaded machine can
    see a tiny run end before READY was read)."""
    return n / seconds if seconds > 0 else None


def make_agent(kind: str, ctx: Ctx, rundir: Path, line: Line) -> AgentProc:
    """``edge``, ``baseline`` or a peer (``node-red``, ``floor``)."""
    if kind == "edge":
        return EdgeAgent(
            rundir, ctx.broker.port, line, ctx.settings.max_bytes, ctx.settings.gather_ms
        )
    if kind == "node-red":
        return NodeRedAgent(rundir, ctx.broker.port, line, ctx.settings.node_red_cache)
    if kind == "floor":
        gather = ctx.settings.gather_ms
        return FloorAgent(rundir, ctx.broker.port, line, 2.0 if gather is None else gather)
    return NaiveAgent(rundir, ctx.broker.port, line)


def _wait_until(pred: Callable[[], bool], timeout: float, agent: AgentProc | None) -> float | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return time.monotonic()
        if agent is not None and agent.proc is not None and agent.proc.poll() is not None:
            return None
        time.sleep(0.005)
    return None


def _wait_received(rx: Receiver, n: int, timeout: float, agent: AgentProc) -> float | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        t = rx.wait_count(n, 0.5)
        if t is not None:
            return t
        if agent.proc is not None and agent.proc.poll() is not None:
            return None
    return None


# ---- drain -----------------------------------------------------------------------------------
def drain(ctx: Ctx, kind: str, snapshot: Path, n: int, rep: int) -> dict[str, Any]:
    """One backlog drain of ``n`` pre-filled readings."""
    rundir = ctx.workdir / f"{kind}-drain-{n}-{rep}"
    line = Line(rundir / "dev", ctx.settings.devices)
    agent = make_agent(kind, ctx, rundir, line)
    if isinstance(agent, NaiveAgent):
        shutil.copytree(snapshot, agent.queue_dir)
    else:
        copy_db(snapshot, agent.db_path())
    rx = Receiver(ctx.broker.port)
    out: dict[str, Any] = {"n": n, "kind": kind, "complete": False}
    try:
        rx.wait_subscribed()
        agent.start()
        out["ready_s"] = agent.wait_ready()
        assert agent.t_ready is not None
        m0 = CpuMark.take(agent.pid)
        rss = RssSampler(agent.pid, 0.05)
        rss.start()
        timeout = min(600.0, max(60.0, n / 200))
        t_rx = _wait_received(rx, n, timeout, agent)
        t_sent = _wait_until(lambda: agent.counts()[1] >= n, 30.0, agent) if t_rx else None
        m1 = CpuMark.take(agent.pid)
        out["peak_rss_mb"] = status_kb(agent.pid, "VmHWM") / 1024
        out["sampled_peak_rss_mb"] = rss.stop() / 1024
        out["rss_samples_mb"] = [
            (round(t - agent.t_ready, 3), round(kb / 1024, 1)) for t, kb in rss.samples[::4]
        ]
        out["received"] = rx.count
        out["duplicates"] = max(0, rx.count - n)
        out["sent"] = agent.counts()[1]
        if t_rx is not None and t_sent is not None:
            t_done = max(t_rx, t_sent)
            out["complete"] = True
            out["drain_s"] = t_done - agent.t_ready
            out["rate"] = _per_s(n, out["drain_s"])
            out["first_reading_s"] = (rx.first_t or t_done) - agent.t_ready
            out["received_at_s"] = t_rx - agent.t_ready
            out["acked_at_s"] = t_sent - agent.t_ready
        cpu = m0.until(m1)
        out.update({f"cpu_{k}": v for k, v in cpu.items()})
        out["cpu_us_per_reading"] = 1e6 * cpu["cpu_s"] / n
        out["cpu_precise_us_per_reading"] = 1e6 * cpu["cpu_precise_s"] / n
        out["exit_s"] = agent.terminate()
    finally:
        agent.close()
        rx.close()
        line.close()
        shutil.rmtree(rundir, ignore_errors=True)
    return out


# ---- live ingest at saturation ---------------------------------------------------------------
def saturation(ctx: Ctx, kind: str, rep: int) -> dict[str, Any]:
    """Scanners writing as fast as the agent accepts; sustained rates; SIGTERM under load."""
    s = ctx.settings
    rundir = ctx.workdir / f"{kind}-live-{rep}"
    line = Line(rundir / "dev", s.live_devices)
    agent = make_agent(kind, ctx, rundir, line)
    rx = Receiver(ctx.broker.port)
    out: dict[str, Any] = {"kind": kind, "devices": s.live_devices}
    pump = Pump(line)
    try:
        rx.wait_subscribed()
        agent.start()
        out["ready_s"] = agent.wait_ready()
        agent.wait_running()
        pump.start()
        time.sleep(s.warm_s)
        m0, c0, r0, f0 = CpuMark.take(agent.pid), agent.counts(), rx.count, pump.frames
        time.sleep(s.live_s)
        m1, c1, r1, f1 = CpuMark.take(agent.pid), agent.counts(), rx.count, pump.frames
        wall = m1.t - m0.t
        cpu = m0.until(m1)
        committed, received = (c1[0] - c0[0]) / wall, (r1 - r0) / wall
        out.update(
            {
                "window_s": wall,
                "written_per_s": (f1 - f0) / wall,
                "committed_per_s": committed,
                "received_per_s": received,
                "marked_sent_per_s": (c1[1] - c0[1]) / wall,
                "cpu_pct_of_core": cpu["cpu_pct_of_core"],
                "cpu_us_per_reading": (
                    1e6 * cpu["cpu_s"] / (min(committed, received) * wall)
                    if min(committed, received) > 0
                    else None
                ),
            }
        )
        # The headline: committed (synchronous=FULL) and PUBACKed. The agent publishes only
        # committed rows and the broker acknowledges what it delivers, so a reading received
        # by the subscriber was both; "marked_sent" is the agent's own record of the PUBACK,
        # which can lag behind.
        out["rate"] = min(committed, received)
        out["sigterm_exit_s"] = agent.terminate()
        out["sigterm_killed"] = agent.killed
        pump.stop()
        written = pump.frames
        unread = line.unread_frames()
        time.sleep(0.1)  # the queue file settles after the exit
        committed_total, marked_total = agent.counts()
        events = agent.events()
        rejects = sum(e.get("event") == "frame_rejected" for e in events)
        out["after_stop"] = {
            **agent.stop_report(),
            "frames_written": written,
            "frames_read_by_agent": written - unread,
            "committed": committed_total,
            "read_not_committed": written - unread - committed_total,
            "frame_rejects": rejects,
            "publish_call_failed": sum(
                e.get("event") == "mqtt_publish_call_failed" for e in events
            ),
            "alarms_received": rx.alarms,
            "marked_sent": marked_total,
            "received": rx.count,
        }
    finally:
        pump.stop()
        agent.close()
        rx.close()
        line.close()
        shutil.rmtree(rundir, ignore_errors=True)
    return out


# ---- line rate: idle, latency, cost, SIGTERM -------------------------------------------------
def _latencies(rx: Receiver, pacer: Pacer) -> dict[str, Any]:
    sent = {(dev, code): t for dev, code, t in pacer.sent}
    lat: list[float] = []
    for raw in rx.lines:
        stamp, _, payload = raw.partition(b" ")
        try:
            recv_ns = int(stamp.replace(b".", b""))
            doc = json.loads(payload)
        except ValueError:
            continue
        for r in doc.get("readings", [doc]):
            t = sent.pop((r.get("device"), r.get("value")), None)
            if t is not None:
                lat.append((recv_ns - t) / 1e6)
    lat.sort()
    return {
        "samples": len(lat),
        "unmatched": len(sent),
        "offered_rate": pacer.rate,
        "achieved_rate": pacer.achieved_rate,
        "p50_ms": percentile(lat, 50),
        "p90_ms": percentile(lat, 90),
        "p99_ms": percentile(lat, 99),
        "p999_ms": percentile(lat, 99.9),
        "max_ms": lat[-1] if lat else None,
        "histogram_ms": [percentile(lat, p) for p in range(0, 101, 5)],
    }


def paced(ctx: Ctx, agent: AgentProc, rx: Receiver, line: Line, rate: float) -> dict[str, Any]:
    """``rate`` frames/s for ``rate_s`` seconds: latency, CPU and context switches per reading.

    CPU (``/proc/<pid>/stat`` utime+stime; schedstat ns alongside) and context switches
    (voluntary + involuntary, summed over ``/proc/<pid>/task/*/status``) are taken just before
    the first frame and again once the subscriber has every reading (or the wait timed out),
    and divided by the frames written.
    """
    s = ctx.settings
    rx.reset()
    pacer = Pacer(line, rate, s.rate_s)
    m0 = CpuMark.take(agent.pid)
    c0 = agent.counts() if agent.has_queue else (0, 0)
    pacer.run()
    got = _wait_received(rx, len(pacer.sent), 5.0 + s.rate_s, agent)
    m1 = CpuMark.take(agent.pid)
    c1 = agent.counts() if agent.has_queue else (0, 0)
    cpu = m0.until(m1)
    n = len(pacer.sent)
    return {
        **_latencies(rx, pacer),
        "readings": n,
        "received": rx.count,
        "kept_up": got is not None,
        "puback_in_window": c1[1] - c0[1] if agent.has_queue else None,
        **{f"cpu_{k}": v for k, v in cpu.items()},
        "ctxt": m1.ctxt - m0.ctxt,
        "cpu_us_per_reading": 1e6 * cpu["cpu_s"] / n if n else None,
        "cpu_precise_us_per_reading": 1e6 * cpu["cpu_precise_s"] / n if n else None,
        "ctxt_per_reading": (m1.ctxt - m0.ctxt) / n if n else None,
        "rss_mb": status_kb(agent.pid, "VmRSS") / 1024,
    }


def line_session(ctx: Ctx, kind: str, rep: int) -> dict[str, Any]:
    """8 scanners: start->READY, idle CPU, each paced rate (latency, cost), SIGTERM."""
    s = ctx.settings
    rundir = ctx.workdir / f"{kind}-line-{rep}"
    line = Line(rundir / "dev", s.devices)
    agent = make_agent(kind, ctx, rundir, line)
    rx = Receiver(ctx.broker.port, stamps=True)
    out: dict[str, Any] = {"kind": kind, "devices": s.devices, "rates": {}}
    pacer: Pacer | None = None
    try:
        rx.wait_subscribed()
        agent.start()
        out["ready_s"] = agent.wait_ready()
        agent.wait_running()
        out["running_s"] = time.monotonic() - agent.t_start
        # idle: connected, no traffic
        time.sleep(min(1.0, s.idle_s))
        m0 = CpuMark.take(agent.pid)
        time.sleep(s.idle_s)
        out["idle"] = m0.until(CpuMark.take(agent.pid))
        out["idle_rss_mb"] = status_kb(agent.pid, "VmRSS") / 1024
        sent = 0
        for rate in s.rates:
            res = paced(ctx, agent, rx, line, rate)
            out["rates"][f"{rate:g}"] = res
            sent += res["readings"]
        out["line_rss_mb"] = status_kb(agent.pid, "VmRSS") / 1024
        out["line_peak_rss_mb"] = status_kb(agent.pid, "VmHWM") / 1024
        # SIGTERM with readings in flight at the highest rate
        rx.reset()
        pacer = Pacer(line, max(s.rates), None)
        pacer.start()
        time.sleep(min(0.5, s.rate_s))
        out["sigterm_exit_s"] = agent.terminate()
        out["sigterm_killed"] = agent.killed
        pacer.stop()
        unread = line.unread_frames()
        time.sleep(0.1)  # the queue file settles after the exit
        total_written = sent + len(pacer.sent)
        out["after_stop"] = {
            **agent.stop_report(),
            "frames_written": total_written,
            "frames_read_by_agent": total_written - unread,
            "received_after_sigterm_window": rx.count,
        }
        if agent.has_queue:
            committed, acked = agent.counts()
            out["after_stop"].update(
                {
                    "committed": committed,
                    "read_not_committed": total_written - unread - committed,
                    "marked_sent": acked,
                }
            )
    finally:
        if pacer is not None:
            pacer.stop()
        agent.close()
        rx.close()
        line.close()
        shutil.rmtree(rundir, ignore_errors=True)
    return out


# ---- the libraries alone ---------------------------------------------------------------------
def paho_raw(ctx: Ctx, n: int, per_msg: int) -> dict[str, Any]:
    """paho-mqtt publishing ``n`` readings at QoS 1, ``per_msg`` per message."""
    rx = Receiver(ctx.broker.port)
    try:
        rx.wait_subscribed()
        cmd = [
            sys.executable,
            "-m",
            "bench.naive",
            "paho",
            "--port",
            str(ctx.broker.port),
            "--n",
            str(n),
            "--per-msg",
            str(per_msg),
        ]
        res = subprocess.run(cmd, capture_output=True, check=True, cwd=ROOT, timeout=600)
        doc = json.loads(res.stdout)
        t_rx = rx.wait_count(n, 30.0)
    finally:
        rx.close()
    ok = bool(doc["ok"]) and t_rx is not None
    wall = max(doc["t_acked"], t_rx or 0.0) - doc["t0"]
    return {
        "readings": n,
        "per_msg": per_msg,
        "messages": doc["messages"],
        "complete": ok,
        "seconds": wall,
        "rate": n / wall if ok else None,
        "msgs_per_s": doc["messages"] / wall if ok else None,
        "puback_only_rate": _per_s(n, doc["t_acked"] - doc["t0"]),
    }


def mosquitto_pub(ctx: Ctx, lines_file: Path, n: int) -> dict[str, Any]:
    """``mosquitto_pub -l -q 1``: one message per line of ``lines_file``."""
    exe = shutil.which("mosquitto_pub")
    if exe is None:
        return {"complete": False, "error": "mosquitto_pub not installed"}
    rx = Receiver(ctx.broker.port)
    try:
        rx.wait_subscribed()
        cmd = [
            exe,
            "-h",
            "127.0.0.1",
            "-p",
            str(ctx.broker.port),
            "-q",
            "1",
            "-l",
            "-t",
            "edge/v1/BENCH/L1/mosquitto_pub/reading/m1",
        ]
        with lines_file.open("rb") as fh:
            t0 = time.monotonic()
            subprocess.run(cmd, stdin=fh, check=True, timeout=600)
            t_exit = time.monotonic()
        t_rx = rx.wait_count(n, 30.0)
    finally:
        rx.close()
    ok = t_rx is not None
    wall = max(t_exit, t_rx or 0.0) - t0
    return {
        "messages": n,
        "received": rx.count,
        "complete": ok,
        "seconds": wall,
        "rate": n / wall if ok else None,
        "exit_only_rate": _per_s(n, t_exit - t0),
    }
