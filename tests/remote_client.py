"""A backend's remote-command client for tests: MQTT 5 (Response Topic + Correlation Data
properties) or 3.1.1 (``reply_to`` and ``correlation`` in the JSON), on a real broker."""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

BASE = "edge/v1/T1/L1/test-agent"


class RemoteClient:
    """Publishes ``command.v1`` requests and collects ``response.v1`` answers."""

    def __init__(
        self,
        port: int,
        protocol: str = "5",
        base: str = BASE,
        client_id: str = "hub",
        auth: tuple[str, str] | None = None,
    ) -> None:
        self.base = base
        self.v5 = protocol == "5"
        self.reply_to = f"{base}/response/{client_id}"
        #: Every response received: (topic, body, correlation property or None).
        self.responses: list[tuple[str, dict[str, Any], bytes | None]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5 if self.v5 else mqtt.MQTTv311,
        )
        if auth:
            self.client.username_pw_set(*auth)
        self.subscribed = threading.Event()
        #: The agent's ``status.v1`` is ``online`` (retained; it subscribes to ``cmd/#`` first).
        self.online = threading.Event()
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_a: self.subscribed.set()
        self.client.on_connect = lambda c, *_a: c.subscribe(
            [(f"{base}/response/#", 1), (f"{base}/status", 1)]
        )
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.subscribed.wait(10), "response subscription not acknowledged"

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == f"{self.base}/status":
            online = json.loads(msg.payload)["state"] == "online"
            (self.online.set if online else self.online.clear)()
            return
        props = getattr(msg, "properties", None)
        corr = getattr(props, "CorrelationData", None)
        with self._lock:
            self.responses.append((msg.topic, json.loads(msg.payload), corr))

    def send(
        self,
        command: str,
        args: dict[str, Any] | None = None,
        *,
        payload: bytes | None = None,
        reply_to: str | None = None,
    ) -> str:
        """Publish a request; returns its correlation (a fresh one per request)."""
        corr = uuid.uuid4().hex
        to = reply_to or self.reply_to
        body: dict[str, Any] = {"schema": "edge-agent/command/v1", "id": str(uuid.uuid4())}
        body["args"] = args or {}
        props = None
        if self.v5:
            props = Properties(PacketTypes.PUBLISH)
            props.ResponseTopic = to
            props.CorrelationData = corr.encode()
        else:
            body["reply_to"], body["correlation"] = to, corr
        data = payload if payload is not None else json.dumps(body).encode()
        self.client.publish(f"{self.base}/cmd/{command}", data, qos=1, properties=props)
        return corr

    def answer(self, corr: str, timeout: float = 10.0) -> dict[str, Any]:
        """The response carrying correlation ``corr`` (property on MQTT 5, JSON on 3.1.1)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                for _t, body, prop in self.responses:
                    if (prop == corr.encode()) or body.get("correlation") == corr:
                        return body
            time.sleep(0.02)
        msg = f"no response for {corr} in {timeout} s; got {self.responses[-3:]}"
        raise AssertionError(msg)

    def call(self, command: str, args: dict[str, Any] | None = None, timeout: float = 10.0) -> Any:
        """Request and wait for the answer; sent once the agent is online (a backend asks an
        agent whose status is ``online``: it is subscribed then), or after ``timeout``."""
        self.online.wait(timeout)
        return self.answer(self.send(command, args), timeout)

    def on(self, topic_suffix: str) -> list[dict[str, Any]]:
        """Responses that arrived on ``{base}/response/{topic_suffix}``."""
        with self._lock:
            return [b for t, b, _ in self.responses if t == f"{self.base}/response/{topic_suffix}"]

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()
