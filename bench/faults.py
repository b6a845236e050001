"""Faults: a broker outage and a process crash, counting every reading that did not arrive.

Both scenarios write frames at ``fault_rate`` over the scanners, each frame with a unique code,
and match what the subscriber received by ``(device, value)``, batches expanded, so a reading
published twice counts once (``duplicates`` says how many extra copies came).

* :func:`outage`: ``pre`` s of traffic, the private broker stopped (SIGTERM: Mosquitto saves
  its sessions) for ``outage_s`` s while the frames keep coming, restarted on the same port,
  ``pre`` s more; then up to 30 s for the agent to catch up. The subscriber has a persistent
  session, so the broker queues for it whatever arrives before it has reconnected.
* :func:`crash`: ``pre`` s of traffic, then SIGKILL mid-stream; the frames still unread on the
  ptys at that moment are read out and excluded (no agent ever had them); the agent is
  started again on the same queue, ``pre`` s more traffic, then up to 30 s to catch up.
  ``lost`` counts readings the agent had taken off the wire that never arrived.

An agent with a queue that is still delivering when the wait ends (the baseline, at a few
hundred readings/s, needs longer than the fault lasted) has not lost what is still in its
queue: ``pending`` is that (committed, not yet PUBACKed, from its queue file), and
``lost = not_received - pending``, never below 0. An agent without a queue (Node-RED) has
nothing pending: what did not arrive is gone.
"""

from __future__ import annotations

import json
import shutil
import time
from typing import Any

from bench.agents import AgentProc
from bench.common import Receiver
from bench.lines import Line, Pacer
from bench.scenarios import Ctx, make_agent

CATCH_UP_S = 60.0


def _delivered(rx: Receiver, sent: set[tuple[str, str]]) -> tuple[int, int]:
    """(distinct sent readings received, extra copies) from the subscriber's lines."""
    seen: set[tuple[str, str]] = set()
    copies = 0
    for raw in rx.lines:
        _, _, payload = raw.partition(b" ")
        try:
            doc = json.loads(payload)
        except ValueError:
            continue
        if not isinstance(doc, dict):
            continue
        for r in doc.get("readings", [doc]):
            key = (str(r.get("device")), str(r.get("value")))
            if key in sent:
                if key in seen:
                    copies += 1
                seen.add(key)
    return len(seen), copies


def _catch_up(rx: Receiver, sent: set[tuple[str, str]], expect: int) -> tuple[int, int, float]:
    """Wait until ``expect`` distinct readings arrived or nothing new came for 5 s (max 30 s)."""
    t0 = time.monotonic()
    last_count, last_change = -1, t0
    while time.monotonic() - t0 < CATCH_UP_S:
        if rx.count >= expect and _delivered(rx, sent)[0] >= expect:
            break
        if rx.count != last_count:
            last_count, last_change = rx.count, time.monotonic()
        elif time.monotonic() - last_change > 5.0:
            break
        time.sleep(0.2)
    got, copies = _delivered(rx, sent)
    return got, copies, time.monotonic() - t0


def _pending(agent: AgentProc) -> int:
    """Readings in the agent's queue not yet marked PUBACKed (0 without a queue)."""
    if not agent.has_queue:
        return 0
    committed, acked = agent.counts()
    return max(0, committed - acked)


def _tally(
    agent: AgentProc, rx: Receiver, sent: set[tuple[str, str]], unread: int = 0
) -> dict[str, Any]:
    """Wait for the agent to catch up, then: received, not received, pending, lost."""
    got, copies, waited = _catch_up(rx, sent, len(sent) - unread)
    missing = len(sent) - unread - got
    pending = _pending(agent) if missing > 0 else 0
    return {
        "sent": len(sent),
        "received": got,
        "not_received": missing,
        "pending": pending,
        "lost": max(0, missing - pending),
        "duplicates": copies,
        "catch_up_s": waited,
    }


def outage(ctx: Ctx, kind: str, rep: int) -> dict[str, Any]:
    """Frames at ``fault_rate`` through a broker outage of ``outage_s`` seconds."""
    s = ctx.settings
    rundir = ctx.workdir / f"{kind}-outage-{rep}"
    line = Line(rundir / "dev", s.devices)
    agent = make_agent(kind, ctx, rundir, line)
    rx = Receiver(ctx.broker.port, stamps=True, persistent=True)
    pacer = Pacer(line, s.fault_rate, None)
    out: dict[str, Any] = {"kind": kind, "rate": s.fault_rate, "outage_s": s.outage_s}
    try:
        rx.wait_subscribed()
        agent.start()
        agent.wait_ready()
        agent.wait_running()
        rx.reset()
        pacer.start()
        time.sleep(s.fault_pre_s)
        before = len(pacer.sent)
        t_down = time.monotonic()
        ctx.broker.mosq.stop()
        time.sleep(s.outage_s)
        ctx.broker.mosq.start()
        out["down_s"] = time.monotonic() - t_down
        during = len(pacer.sent) - before
        time.sleep(s.fault_pre_s)
        pacer.stop()
        keys = {(dev, code) for dev, code, _ in pacer.sent}
        out.update(_tally(agent, rx, keys))
        out["sent_during_outage"] = during
        out["alive"] = agent.proc is not None and agent.proc.poll() is None
        agent.terminate()
    finally:
        pacer.stop()
        if ctx.broker.mosq.proc is None or ctx.broker.mosq.proc.poll() is not None:
            ctx.broker.mosq.start()  # the run's later scenarios need it
        agent.close()
        rx.close()
        line.close()
        shutil.rmtree(rundir, ignore_errors=True)
    return out


def crash(ctx: Ctx, kind: str, rep: int) -> dict[str, Any]:
    """Frames at ``fault_rate``; SIGKILL mid-stream; restart on the same queue; count lost."""
    s = ctx.settings
    rundir = ctx.workdir / f"{kind}-crash-{rep}"
    line = Line(rundir / "dev", s.devices)
    agent = make_agent(kind, ctx, rundir, line)
    rx = Receiver(ctx.broker.port, stamps=True)
    out: dict[str, Any] = {"kind": kind, "rate": s.fault_rate}
    pacers: list[Pacer] = []
    try:
        rx.wait_subscribed()
        agent.start()
        agent.wait_ready()
        agent.wait_running()
        rx.reset()
        pacers.append(Pacer(line, s.fault_rate, None))
        pacers[0].start()
        time.sleep(s.fault_pre_s)
        agent.kill9()
        pacers[0].stop()
        t_kill = time.monotonic()
        unread = line.unread_frames()
        agent.start(append=True)
        agent.wait_ready()
        agent.wait_running()
        out["restart_to_running_s"] = time.monotonic() - t_kill
        pacers.append(Pacer(line, s.fault_rate, s.fault_pre_s))
        pacers[1].run()
        keys = {(dev, code) for p in pacers for dev, code, _ in p.sent}
        out.update(_tally(agent, rx, keys, unread))
        out["sent_before_kill"] = len(pacers[0].sent)
        out["unread_at_kill"] = unread
        agent.terminate()
    finally:
        for p in pacers:
            p.stop()
        agent.close()
        rx.close()
        line.close()
        shutil.rmtree(rundir, ignore_errors=True)
    return out
