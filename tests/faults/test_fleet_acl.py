"""Issue 14: the fleet ACL (docs/examples/fleet.acl) on a real Mosquitto with ``acl_file``.

Agent ``agent-a`` runs as a process; ``agent-b`` is a raw client with its own credentials. The
backend's command reaches agent-a and its answer comes back; agent-b, subscribed to agent-a's
``cmd/#``, receives nothing; agent-b publishing under agent-a's subtree gets PUBACK 0x87. An
agent whose topics lie outside what its login may write (a copied config: agent_id of one PC,
credentials of another) has its publishes refused with 0x87, and says so: ``publish_rejected``
in its log and ``edge-agent status``.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.control import request
from simulators.mosquitto import Mosquitto
from tests.harness import ROOT, agent_config
from tests.remote_client import RemoteClient
from tests.test_e2e import scanner_device

pytestmark = pytest.mark.faults

Factory = Callable[..., Any]
A = "edge/v1/T1/L1/agent-a"
USERS = {"agent-a": "pw-a", "agent-b": "pw-b", "backend": "pw-backend"}


def _broker(tmp: Path) -> Mosquitto:
    bdir = tmp / "fleet"
    bdir.mkdir()
    pw = bdir / "passwd"
    for user, word in USERS.items():
        flags = [] if pw.exists() else ["-c"]
        subprocess.run(["mosquitto_passwd", "-b", *flags, str(pw), user, word], check=True)
    acl = bdir / "acl"
    acl.write_text((ROOT / "docs" / "examples" / "fleet.acl").read_text())
    if os.geteuid() == 0:
        owner = pwd.getpwnam("mosquitto")
        for f in (pw, acl):
            os.chown(f, owner.pw_uid, owner.pw_gid)
    broker = Mosquitto(bdir, extra=f"password_file {pw}\nacl_file {acl}\n", anonymous=False)
    broker.start()
    return broker


def _agent_cfg(
    tmp: Path, port: int, agent_id: str, login: str, devices: dict[str, Any] | None = None
) -> Path:
    secret = tmp / f"{login}.pw"
    secret.write_text(USERS[login])
    secret.chmod(0o600)
    cfg = agent_config(
        tmp, port, devices or {}, f'username = "{login}"\npassword_file = "{secret}"'
    )
    cfg.write_text(cfg.read_text().replace('agent_id = "test-agent"', f'agent_id = "{agent_id}"'))
    return cfg


class _Raw:
    """agent-b as a raw MQTT 5 client: what it receives and its PUBACK reason codes."""

    def __init__(self, port: int) -> None:
        self.got: list[str] = []
        self.acks: dict[int, int] = {}
        self.suback = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="b", protocol=mqtt.MQTTv5)
        c.username_pw_set("agent-b", USERS["agent-b"])
        c.on_message = lambda _c, _u, m: self.got.append(m.topic)
        c.on_subscribe = lambda *_a: self.suback.set()
        c.on_publish = lambda _c, _u, mid, rc, _p: self.acks.__setitem__(mid, rc.value)
        c.connect("127.0.0.1", port)
        c.loop_start()
        self.client = c


def _publish_rc(port: int, topic: str) -> int:
    """The PUBACK reason code agent-b gets for one QoS 1 publish (a fresh connection each:
    Mosquitto closes a connection after a 0x87)."""
    raw = _Raw(port)
    try:
        info = raw.client.publish(topic, b"{}", qos=1)
        deadline = time.monotonic() + 5
        while info.mid not in raw.acks and time.monotonic() < deadline:
            time.sleep(0.02)
        return raw.acks.get(info.mid, -1)
    finally:
        raw.client.loop_stop()


def test_fleet_acl_isolates_agents(tmp_path: Path, agent_factory: Factory) -> None:
    broker = _broker(tmp_path)
    hub = b = None
    try:
        agent = agent_factory(_agent_cfg(tmp_path, broker.port, "agent-a", "agent-a"))
        agent.start()
        b = _Raw(broker.port)
        b.client.subscribe(f"{A}/cmd/#", qos=1)
        b.client.subscribe("edge/v1/T1/L1/agent-b/cmd/#", qos=1)
        assert b.suback.wait(5)
        hub = RemoteClient(broker.port, base=A, auth=("backend", USERS["backend"]))
        time.sleep(0.5)  # agent-a's subscription after its CONNACK
        assert hub.call("ping", timeout=10)["result"] == {"pong": True}
        time.sleep(0.3)
        assert b.got == [], "agent-b read agent-a's commands"
        # agent-b writing into agent-a's subtree, and into its own cmd/: both refused (each on
        # a fresh connection: Mosquitto closes one after a 0x87)
        for topic in (f"{A}/reading/x", "edge/v1/T1/L1/agent-b/cmd/ping"):
            assert _publish_rc(broker.port, topic) == 0x87, topic
        # and a publish inside its own subtree is accepted (the ACL is not simply closed)
        assert _publish_rc(broker.port, "edge/v1/T1/L1/agent-b/alarm") < 0x80  # 0x10: no subs
    finally:
        for c in (hub, b):
            if c is not None:
                (c.close if isinstance(c, RemoteClient) else c.client.loop_stop)()
        broker.stop()


def test_agent_publishing_outside_its_prefix_is_refused_and_alarmed(
    tmp_path: Path, scanner: Factory, agent_factory: Factory
) -> None:
    broker = _broker(tmp_path)
    try:
        # agent_id agent-a, but logged in as agent-b: every topic is outside its prefix
        sim = scanner("scan", rate=20, seed=5)
        cfg = _agent_cfg(tmp_path, broker.port, "agent-a", "agent-b", {"s1": scanner_device(sim)})
        agent = agent_factory(cfg)
        agent.start()
        sim.start(count=5)
        assert agent.wait_log("mqtt_publish_rejected", 10), agent.log_text()
        st: dict[str, Any] = {}
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            st = request(tmp_path / "ctl.sock", {"cmd": "status"})["status"]
            if st["broker"]["rejects"]:
                break
            time.sleep(0.2)
        assert any("Not authorized" in k for k in st["broker"]["rejects"]), st["broker"]
        rejected = [e for e in agent.events() if e["event"] == "mqtt_publish_rejected"]
        assert rejected[0]["code"] == 0x87, rejected
    finally:
        broker.stop()
