"""Test harness with real parts: a backend subscriber on a real broker, the agent subprocess."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "edge_agent" / "schemas"


class Subscriber:
    """The "backend": MQTT v5, QoS 1, persistent session; records every message."""

    def __init__(
        self,
        port: int,
        topic: str = "edge/#",
        client_id: str = "backend",
        auth: tuple[str, str] | None = None,
        ca_file: Path | None = None,
    ) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        #: Wall time each message arrived (parallel to ``messages``).
        self.arrived: list[float] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
        )
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, _u, _f, _rc, _p=None: c.subscribe(topic, qos=1)
        #: Set once the broker acknowledged the subscription.
        self.subscribed = threading.Event()
        self.client.on_subscribe = lambda *_a: self.subscribed.set()
        self.client.reconnect_delay_set(1, 1)
        if auth:
            self.client.username_pw_set(*auth)
        if ca_file:
            self.client.tls_set(ca_certs=str(ca_file))
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.client.connect("127.0.0.1", port, clean_start=False, properties=props)
        self.client.loop_start()

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload), msg.retain))
            self.arrived.append(time.time())

    def readings(self) -> list[tuple[str, dict[str, Any]]]:
        """Every reading received, batches expanded: (topic, reading)."""
        out = []
        with self._lock:
            msgs = list(self.messages)
        for topic, payload, _ in msgs:
            if "/reading/" in topic:
                out.append((topic, json.loads(payload)))
            elif topic.endswith("/batch"):
                out.extend((topic, r) for r in json.loads(payload)["readings"])
        return out

    def first_arrival(self) -> dict[str, float]:
        """Reading id -> wall time its first copy arrived."""
        out: dict[str, float] = {}
        with self._lock:
            msgs = list(zip(self.messages, self.arrived, strict=True))
        for (topic, payload, _), t in msgs:
            if "/reading/" in topic:
                out.setdefault(json.loads(payload)["id"], t)
            elif topic.endswith("/batch"):
                for r in json.loads(payload)["readings"]:
                    out.setdefault(r["id"], t)
        return out

    def payloads(self, suffix: str) -> list[bytes]:
        """Raw payloads of topics ending with ``suffix``."""
        with self._lock:
            return [p for t, p, _ in self.messages if t.endswith(suffix)]

    def states(self) -> list[str]:
        """The ``state`` of every ``status.v1`` message on a status topic, in arrival order."""
        return [json.loads(p)["state"] for p in self.payloads("/status")]

    def wait_for(self, pred: Callable[[], bool], timeout: float = 15.0) -> bool:
        """Poll ``pred`` until true or ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                return True
            time.sleep(0.05)
        return pred()

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()


def acl_broker_and_config(tmp: Path, acl: str) -> tuple[Any, Path]:
    """A Mosquitto (not started) that admits user ``agent`` (password ``pw1``) under ``acl``
    (the lines after ``user agent``), and an agent config for it using a password file."""
    from simulators.mosquitto import Mosquitto

    bdir = tmp / "aclb"
    bdir.mkdir()
    pw = bdir / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(pw), "agent", "pw1"], check=True)
    (bdir / "acl").write_text("user agent\n" + acl)
    broker = Mosquitto(
        bdir, extra=f"password_file {pw}\nacl_file {bdir / 'acl'}\n", anonymous=False
    )
    secret = tmp / "pw"
    secret.write_text("pw1")
    secret.chmod(0o600)
    cfg = agent_config(tmp, broker.port, {}, f'username = "agent"\npassword_file = "{secret}"')
    return broker, cfg


def backend_session_before(broker: Any) -> None:
    """Give the backend its persistent session and subscription on a broker that is not running
    yet, then stop it again: whatever the agent publishes once the broker is back waits in that
    session, even if the agent reconnects before the test's :class:`Subscriber` does (its
    reconnect delay is at most 1 s, so that race is real)."""
    broker.start()
    sub = Subscriber(broker.port)
    try:
        assert sub.subscribed.wait(10), "backend subscription not acknowledged"
    finally:
        sub.close()
    broker.stop()


def agent_config(
    tmp: Path,
    broker_port: int,
    devices: dict[str, dict[str, Any]],
    extra: str = "",
    queue_extra: str = "",
    sections: str = "",
) -> Path:
    """Write an agent TOML for a test run; returns its path."""
    lines = [
        "[node]",
        'site = "T1"',
        'line = "L1"',
        'agent_id = "test-agent"',
        "[mqtt]",
        f'brokers = [{{ host = "127.0.0.1", port = {broker_port} }}]',
        "reconnect_max_s = 1",
        extra,
        "[queue]",
        f'path = "{tmp / "state" / "queue.db"}"',
        queue_extra,
        "[log]",
        'format = "json"',
        'level = "info"',
        f'[control]\nsocket = "{tmp / "ctl.sock"}"',
        sections,
    ]
    for dev_id, table in devices.items():
        lines.append(f"[devices.{dev_id}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in table.items()]
    path = tmp / "agent.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


class Agent:
    """``edge-agent run`` as a subprocess; stderr (JSON logs) kept in a file per start."""

    def __init__(self, config: Path, logdir: Path, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.logdir = logdir
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, wait_ready: bool = True) -> None:
        """Start and (by default) wait for the ``started`` log line."""
        self.starts += 1
        log = (self.logdir / f"agent-{self.starts}.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge_agent", "run", "-c", str(self.config)],
            stderr=log,
            stdout=subprocess.DEVNULL,
            env=self.env,
            cwd=ROOT,
        )
        log.close()
        if wait_ready:
            assert self.wait_log("started", 10), self.log_text()

    def log_path(self) -> Path:
        """Log file of the latest start."""
        return self.logdir / f"agent-{self.starts}.log"

    def log_text(self) -> str:
        """All logs of all starts."""
        return "".join(
            (self.logdir / f"agent-{i}.log").read_text() for i in range(1, self.starts + 1)
        )

    def events(self) -> list[dict[str, Any]]:
        """Every JSON log event of every start."""
        out = []
        for line in self.log_text().splitlines():
            if line.startswith("{"):
                out.append(json.loads(line))
        return out

    def json_events(self) -> list[dict[str, Any]]:
        """Every log line of every start, each asserted to be one JSON object (journald needs
        one object per line: a traceback or a stray print fails the test)."""
        out = []
        for i in range(1, self.starts + 1):
            for n, line in enumerate((self.logdir / f"agent-{i}.log").read_text().splitlines()):
                try:
                    event = json.loads(line)
                except ValueError:
                    event = None
                assert isinstance(event, dict), f"agent-{i}.log line {n + 1} is not JSON: {line!r}"
                out.append(event)
        return out

    def events_of(self, start: int) -> list[dict[str, Any]]:
        """The JSON log events of one start (1-based)."""
        path = self.logdir / f"agent-{start}.log"
        text = path.read_text() if path.exists() else ""
        return [json.loads(line) for line in text.splitlines() if line.startswith("{")]

    def wait_log(self, event: str, timeout: float) -> bool:
        """Wait for a log event of the latest start."""
        return wait_log_event(self.proc, self.log_path(), event, timeout)

    def kill(self, sig: int = signal.SIGKILL) -> int:
        """Send ``sig`` and wait; returns the exit status."""
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(10)

    def stop(self) -> None:
        """SIGTERM if still running."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def wait_log_event(
    proc: subprocess.Popen[bytes] | None, log: Path, event: str, timeout: float
) -> bool:
    """Wait until ``log`` (JSON lines) has ``event``; False on timeout or once ``proc`` ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if f'"event": "{event}"' in log.read_text():
            return True
        if proc and proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False


def log_time(event: dict[str, Any]) -> float:
    """Wall time (epoch seconds) of a JSON log event's ISO ``timestamp``."""
    return dt.datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00")).timestamp()


def queue_rows(db: Path) -> list[dict[str, Any]]:
    """Every row in the agent's queue (read-only), with its payload decoded."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = con.execute("SELECT n, id, device, seq, sent_ns, payload FROM outbox").fetchall()
    finally:
        con.close()
    return [
        {"n": n, "id": i, "device": d, "seq": s, "sent_ns": sent, "payload": json.loads(p)}
        for n, i, d, s, sent, p in rows
    ]


def schema_validator() -> Any:
    """A jsonschema validator for reading.v1 / batch.v1 payloads, with local $ref resolution."""
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource

    resources = []
    for f in SCHEMAS.glob("*.json"):
        doc = json.loads(f.read_text())
        resources.append((f.name, Resource.from_contents(doc)))
        resources.append((doc["$id"], Resource.from_contents(doc)))
    registry = Registry().with_resources(resources)
    return {
        name: Draft202012Validator(json.loads((SCHEMAS / name).read_text()), registry=registry)
        for name in (p.name for p in SCHEMAS.glob("*.json"))
    }
