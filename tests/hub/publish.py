"""Publishing agent-shaped messages from a test (a real MQTT client on the real broker)."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


def uuid7() -> str:
    """A UUIDv7-shaped id (the hub only needs a UUID)."""
    u = uuid.uuid4().hex
    return f"{u[:8]}-{u[8:12]}-7{u[13:16]}-8{u[17:20]}-{u[20:]}"


def now_ts() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def reading(agent: str, device: str, seq: int, **extra: Any) -> dict[str, Any]:
    return {
        "schema": "edge-agent/reading/v1",
        "id": uuid7(),
        "agent": agent,
        "site": "T1",
        "line": "L1",
        "device": device,
        "seq": seq,
        "kind": "barcode",
        "value": f"SF{seq:013d}",
        "ts": now_ts(),
        "mono_ns": seq,
        "boot_id": "b",
        "raw": "00",
        **extra,
    }


def connect(port: int, client_id: str | None = None) -> mqtt.Client:
    c = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id or uuid7(), protocol=mqtt.MQTTv5
    )
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


def publish(port: int, msgs: Iterable[tuple[str, Any, bool]]) -> None:
    """Publish (topic, payload, retain) at QoS 1 and wait for every PUBACK."""
    c = connect(port)
    infos = []
    for topic, payload, retain in msgs:
        data = payload if isinstance(payload, bytes | str) else json.dumps(payload)
        infos.append(c.publish(topic, data, qos=1, retain=retain))
    for i in infos:
        i.wait_for_publish(10)
    c.disconnect()
    c.loop_stop()


def publish_readings(
    port: int, agent: str, device: str, seqs: Iterable[int]
) -> list[dict[str, Any]]:
    """One reading.v1 message per seq; returns the readings."""
    rs = [reading(agent, device, s) for s in seqs]
    publish(port, ((f"edge/v1/T1/L1/{agent}/reading/{device}", r, False) for r in rs))
    return rs
