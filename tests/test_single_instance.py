"""One daemon per queue (and per control socket), and two agents with one agent_id.

A second ``edge-agent run`` on a running daemon's config used to start a full second daemon on
the same ``queue.db``: duplicate ``(device, seq)`` pairs under different ids, corrupted counters,
the running daemon's control socket deleted. Now the second one is refused before it opens the
queue, with exit code 73 (``RestartPreventExitStatus=``), and the first keeps its socket.
"""

from __future__ import annotations

import errno
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edge_agent import control, instance
from simulators.mosquitto import Mosquitto
from tests.harness import ROOT, Agent, Subscriber, agent_config, log_time
from tests.test_e2e import assert_oracle, scanner_device

Factory = Callable[..., Any]


def _cli(*args: str, timeout: float = 15.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_agent", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        check=False,
    )


def _run_second(config: Path) -> subprocess.CompletedProcess[str]:
    return _cli("run", "-c", str(config))


def _counters(db: Path) -> dict[str, int]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT name, value FROM counters").fetchall()
    finally:
        con.close()
    return dict(rows)


def test_lock_is_exclusive_and_dies_with_its_holder(tmp_path: Path) -> None:
    db = tmp_path / "state" / "queue.db"
    held = instance.acquire(db)
    with pytest.raises(instance.AlreadyRunningError) as err:
        instance.acquire(db)  # a second open file description: flock refuses it
    assert str(err.value) == (
        f"another edge-agent (pid {os.getpid()}) holds {db}; "
        "stop it first (systemctl stop edge-agent)"
    )
    held.release()
    instance.acquire(db).release()
    # a holder killed with SIGKILL frees the lock (the kernel drops it with the process)
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from edge_agent import instance; "
            f"instance.acquire(Path({str(db)!r})); print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "held"
    with pytest.raises(instance.AlreadyRunningError) as err:
        instance.acquire(db)
    assert err.value.pid == child.pid
    child.send_signal(signal.SIGKILL)
    child.wait(5)
    child.stdout.close()
    instance.acquire(db).release()


def test_second_daemon_on_one_config_is_refused_and_the_first_is_intact(
    tmp_path: Path, broker: Mosquitto, backend: Subscriber, scanner: Factory, agent_factory: Factory
) -> None:
    sim = scanner("hand", framing="terminator", terminator="CR", rate=40, seed=12)
    cfg = agent_config(tmp_path, broker.port, {"hand_1": scanner_device(sim)})
    first = agent_factory(cfg)
    first.start()
    sim.start()
    time.sleep(1.0)
    db = tmp_path / "state" / "queue.db"
    t0 = time.monotonic()
    second = _run_second(cfg)
    refused_in = time.monotonic() - t0
    assert second.returncode == instance.EX_LOCKED, second.stderr
    assert first.proc is not None
    assert second.stderr.strip().splitlines()[-1] == (
        f"edge-agent: another edge-agent (pid {first.proc.pid}) holds {db}; "
        "stop it first (systemctl stop edge-agent)"
    )
    assert refused_in < 5.0
    assert "Traceback" not in second.stderr
    # the first daemon still answers on its socket and is the only one that ever started
    assert control.request(tmp_path / "ctl.sock", {"cmd": "ping"})["pid"] == first.proc.pid
    time.sleep(1.0)
    sim.stop()
    emitted = sum(1 for t in sim.truth if t.kind == "barcode" and t.delivered)
    assert emitted > 40
    assert backend.wait_for(lambda: len({r["id"] for _, r in backend.readings()}) >= emitted, 20)
    first.stop()
    rows = assert_oracle(backend, db)
    assert len(rows) == emitted
    assert len({(r["device"], r["seq"]) for r in rows}) == len(rows)
    c = _counters(db)
    assert c["accepted"] == len(rows) == c["sent"], c
    starts = [e for e in first.json_events() if e["event"] == "started"]
    assert len(starts) == 1


def test_kill_9_frees_the_queue_and_a_stale_socket_is_replaced(
    tmp_path: Path, broker: Mosquitto, agent_factory: Factory
) -> None:
    cfg = agent_config(tmp_path, broker.port, {})
    a = agent_factory(cfg)
    a.start()
    a.kill(signal.SIGKILL)
    assert (tmp_path / "ctl.sock").exists()  # left behind: nobody answers on it
    a.start()  # the lock died with the process; the stale socket is replaced
    assert a.proc is not None
    assert control.request(tmp_path / "ctl.sock", {"cmd": "ping"})["pid"] == a.proc.pid


def test_second_run_with_another_config_leaves_the_first_socket_working(
    tmp_path: Path, broker: Mosquitto, agent_factory: Factory
) -> None:
    cfg = agent_config(tmp_path, broker.port, {})
    first = agent_factory(cfg)
    first.start()
    other = tmp_path / "other"
    other.mkdir()
    text = cfg.read_text().replace(str(tmp_path / "state"), str(other / "state"))
    other_cfg = other / "agent.toml"
    other_cfg.write_text(text.replace('agent_id = "test-agent"', 'agent_id = "other-agent"'))
    second = _run_second(other_cfg)
    assert first.proc is not None
    sock = tmp_path / "ctl.sock"
    assert second.returncode == instance.EX_LOCKED, second.stderr
    assert second.stderr.strip().splitlines()[-1] == (
        f"edge-agent: another edge-agent (pid {first.proc.pid}) holds {sock}; give this daemon "
        "its own [control] socket, or stop the other one first (systemctl stop edge-agent)"
    )
    assert not (other / "state" / "queue.db").exists()  # refused before opening its queue
    assert control.request(sock, {"cmd": "ping"})["pid"] == first.proc.pid
    status = control.request(sock, {"cmd": "status"})["status"]
    assert status["agent"] == "test-agent"
    first.stop()
    assert not sock.exists()  # the first removes its own socket on a clean stop


def test_same_agent_id_on_two_queues_alarms_and_backs_off(
    tmp_path: Path, broker: Mosquitto, backend: Subscriber
) -> None:
    agents = []
    for name in ("pc1", "pc2"):
        d = tmp_path / name
        d.mkdir()
        agents.append(Agent(agent_config(d, broker.port, {}), d))
    try:
        agents[0].start()
        time.sleep(0.5)
        t0 = time.monotonic()
        agents[1].start()  # takes the session from the first: a copied config on a second PC
        time.sleep(14.0)
        window = time.monotonic() - t0
        alarms = [p for p in backend.payloads("/alarm") if b"session_taken_over" in p]
    finally:
        for a in agents:
            a.stop()
    events = [e for a in agents for e in a.json_events()]
    taken = [e for e in events if e["event"] == "mqtt_session_taken_over"]
    assert taken, "no agent noticed that its session was taken over"
    # Mosquitto < 2.0.15 (Debian 12 has 2.0.11) closes the old connection without the MQTT 5
    # DISCONNECT 0x8E, so the agent infers the takeover from connections closed right after
    # they were accepted; a broker that sends 0x8E gives certainty "certain" and the words below
    # without "(suspected)"
    assert taken[0]["message"] == (
        "session taken over (suspected): the broker closed the connection right after "
        "accepting it, 2 times in a row; another client with id edge-agent-test-agent probably "
        "takes over the session; is the same agent_id configured on another PC?"
    )
    assert all(e["retry_in_s"] >= 5.0 for e in taken)
    assert alarms, "the session_taken_over alarm never reached the backend"
    connects = [log_time(e) for e in events if e["event"] == "mqtt_connected"]
    # without the back-off each agent retakes the session 0.5 s after losing it: ~2 connects/s
    # (about 28 in this window); with it, a few quick ones until the pattern is seen, then at
    # most one per agent per 5 s
    assert len(connects) <= 12, (len(connects), window)
    # once the pattern is seen, at most one connect per agent per 5 s: at most 4 in the last
    # 8 s (the quick ones before the first notice do not count: with only one back-off inside
    # the window, "the last 8 s" reached back into them under load)
    last, noticed = max(connects), min(log_time(e) for e in taken)
    assert sum(t > max(last - 8.0, noticed) for t in connects) <= 4, (sorted(connects), noticed)


def test_disconnect_0x8e_is_a_certain_takeover_and_delays_the_next_attempt() -> None:
    """A broker that follows MQTT 5 (Mosquitto >= 2.0.15, EMQX, HiveMQ) says 0x8E: no guessing."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.reasoncodes import ReasonCode

    from edge_agent.config import MqttConfig
    from edge_agent.mqtt_client import build_client

    cfg = MqttConfig.model_validate({"brokers": [{"host": "127.0.0.1", "port": 1}]})
    client = build_client(cfg, "edge-agent-x", None)
    client.note_connected()
    kind, wait = client.takeover(ReasonCode(PacketTypes.DISCONNECT, identifier=0x8E), True) or (
        "",
        0.0,
    )
    assert kind == "certain" and 5.0 <= wait <= 7.5
    assert client._reconnect_min_delay == wait
    kind, wait = client.takeover(ReasonCode(PacketTypes.DISCONNECT, identifier=0x8E), True) or (
        "",
        0.0,
    )
    assert kind == "certain" and 10.0 <= wait <= 15.0  # doubles while takeovers go on
    client.note_connected()
    assert client._reconnect_min_delay == 0.5
    # a close the server announced, or one right after a rejected PUBACK, is not a takeover
    unspecified = ReasonCode(PacketTypes.DISCONNECT, identifier=0x80)
    for _ in range(3):
        client.note_connected()
        client.note_rejected()
        assert client.takeover(unspecified, False) is None
    # nor a close by reset: the broker refused something we sent (an ACL) and the reset
    # dropped its PUBACK 0x87 before we read it (test_fleet_acl saw a suspected takeover)
    client._last_reject = -1e9
    for _ in range(3):
        client.note_connected()
        client.connect_errno = errno.ECONNRESET
        assert client.takeover(unspecified, False) is None
    client.connect_errno = None
    client.note_connected()
    assert client.takeover(unspecified, False) is None  # one short-lived close: not yet
    client.note_connected()
    assert client.takeover(unspecified, False) is not None  # the second in a row: suspected


def test_purge_goes_through_the_daemon_or_takes_the_lock(
    tmp_path: Path, broker: Mosquitto, agent_factory: Factory
) -> None:
    cfg = agent_config(tmp_path, broker.port, {})
    db = tmp_path / "state" / "queue.db"
    a = agent_factory(cfg)
    a.start()
    purge = ["queue", "purge", "--sent-before", "0s", "-c", str(cfg), "--json"]
    res = _cli(*purge)
    assert res.returncode == 0 and '"via": "daemon"' in res.stdout, res.stderr
    a.stop()
    # the same daemon without its control socket: purge cannot go through it, and must not
    # write the queue under it
    cfg.write_text(cfg.read_text().replace("[control]\n", "[control]\nenabled = false\n"))
    a.start()
    assert a.proc is not None
    res = _cli(*purge)
    assert res.returncode == instance.EX_LOCKED
    assert res.stderr.splitlines() == [
        f"edge-agent: another edge-agent (pid {a.proc.pid}) holds {db}; it does not answer on "
        f"{tmp_path / 'ctl.sock'}, so purge cannot go through it: stop it first "
        "(systemctl stop edge-agent)"
    ]
    a.stop()
    res = _cli(*purge)
    assert res.returncode == 0 and '"via": "direct"' in res.stdout, res.stderr
    assert not instance.is_held(db)  # released again
