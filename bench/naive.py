"""The baseline: what a Python developer writes first, run as its own process.

``agent``: pyserial ``readline()`` per scanner thread -> ``persistqueue.SQLiteAckQueue.put``;
one consumer thread ``get()`` -> paho ``publish(qos=1)`` -> ``wait_for_publish()`` -> ``ack()``.
It reports READY=1 on ``$NOTIFY_SOCKET`` once the queue, ports and broker connection are up,
and on SIGTERM stops reading, finishes the message in flight and exits.

``paho``: paho-mqtt alone, QoS 1, publishing pre-built readings as fast as paho takes them,
one reading per message or ``--per-msg`` readings per batch payload; prints its timing.

Run as ``python -m bench.naive agent|paho ...`` (the benchmark starts it).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import persistqueue
import serial
from paho.mqtt.enums import CallbackAPIVersion

TOPIC_BASE = "edge/v1/BENCH/L1"


def emit(event: str, **kw: Any) -> None:
    """One JSON log line on stderr (the benchmark waits for some of them)."""
    sys.stderr.write(json.dumps({"event": event, "t": time.monotonic(), **kw}) + "\n")
    sys.stderr.flush()


def sd_notify(state: str) -> None:
    """Tell the benchmark (standing in for systemd) about our state."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.connect(addr)
        s.sendall(state.encode())


def to_reading(device: str, seq: int, line: bytes) -> dict[str, Any]:
    """The reading dict, the same fields as edge-agent's reading.v1."""
    text = line.rstrip(b"\r\n").decode()
    aim, code = (text[:3], text[3:]) if text.startswith("]") else (None, text)
    now = time.time_ns()
    return {
        "schema": "edge-agent/reading/v1",
        "id": str(uuid.uuid4()),
        "agent": "naive",
        "site": "BENCH",
        "line": "L1",
        "device": device,
        "seq": seq,
        "kind": "barcode",
        "value": code,
        "ts": datetime.fromtimestamp(now / 1e9, UTC).isoformat(),
        "mono_ns": time.monotonic_ns(),
        "boot_id": "bench",
        "raw": line.hex(),
        "aim": aim,
        "check": "none",
    }


class NaiveAgent:
    """The baseline agent."""

    def __init__(self, queue_dir: str, port: int, devices: dict[str, str]) -> None:
        self.q = persistqueue.SQLiteAckQueue(queue_dir, multithreading=True)
        self.devices = devices
        self.stop = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="naive-agent", protocol=mqtt.MQTTv5
        )
        connected = threading.Event()
        self.client.on_connect = lambda *_a: connected.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not connected.wait(10):
            raise SystemExit("naive: broker connection failed")
        emit("mqtt_connected")
        self.readers = [
            threading.Thread(target=self.read, args=(dev, path), daemon=True)
            for dev, path in devices.items()
        ]
        self.consumer = threading.Thread(target=self.publish_loop, daemon=True)

    def read(self, device: str, path: str) -> None:
        """One scanner: readline, put."""
        ser = serial.Serial(path, 9600, timeout=0.5)
        emit("port_opened", device=device)
        seq = 0
        while not self.stop.is_set():
            line = ser.readline()
            if line.endswith(b"\n"):
                seq += 1
                self.q.put(to_reading(device, seq, line))
        ser.close()

    def publish_loop(self) -> None:
        """get, publish, wait for the PUBACK, ack."""
        while not self.stop.is_set():
            try:
                item = self.q.get(timeout=0.5)
            except persistqueue.Empty:
                continue
            topic = f"{TOPIC_BASE}/naive/reading/{item['device']}"
            info = self.client.publish(topic, json.dumps(item), qos=1)
            try:
                info.wait_for_publish(timeout=10)
            except (RuntimeError, ValueError):
                self.q.nack(item)
                continue
            if info.is_published():
                self.q.ack(item)
            else:
                self.q.nack(item)

    def run(self) -> int:
        """Start the threads, report READY, wait for SIGTERM."""
        signal.signal(signal.SIGTERM, lambda *_a: self.stop.set())
        for t in self.readers:
            t.start()
        self.consumer.start()
        sd_notify("READY=1")
        emit("started")
        while not self.stop.wait(0.5):
            pass
        for t in self.readers:
            t.join(2)
        self.consumer.join(11)
        self.client.disconnect()
        self.client.loop_stop()
        self.q.close()
        emit("stopped")
        return 0


def prefill(queue_dir: Path, readings: list[dict[str, Any]]) -> None:
    """Put readings into a baseline queue with the baseline's own ``put``."""
    q = persistqueue.SQLiteAckQueue(str(queue_dir), multithreading=True)
    for r in readings:
        q.put(r)
    q.close()


def paho_publish(port: int, n: int, per_msg: int) -> dict[str, Any]:
    """Publish ``n`` readings (pre-built) at QoS 1; time from first publish to last PUBACK."""
    from bench.lines import sample_readings  # noqa: PLC0415 - heavy, and only here

    uniq = [r.to_json() for r in sample_readings(min(n, 20_000), "p1", "paho")]
    payloads = [uniq[i % len(uniq)] for i in range(n)]
    if per_msg > 1:
        msgs = [
            b'{"schema":"edge-agent/batch/v1","count":%d,"readings":[' % len(chunk)
            + b",".join(chunk)
            + b"]}"
            for chunk in (payloads[i : i + per_msg] for i in range(0, n, per_msg))
        ]
        topic = f"{TOPIC_BASE}/paho/batch"
    else:
        msgs = payloads
        topic = f"{TOPIC_BASE}/paho/reading/p1"
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"paho-{per_msg}", protocol=mqtt.MQTTv5
    )
    done = threading.Event()
    acked = [0]
    connected = threading.Event()

    def on_publish(*_a: Any) -> None:
        acked[0] += 1
        if acked[0] == len(msgs):
            done.set()

    client.on_publish = on_publish
    client.on_connect = lambda *_a: connected.set()
    client.connect("127.0.0.1", port)
    client.loop_start()
    connected.wait(10)
    t0 = time.monotonic()
    for m in msgs:
        client.publish(topic, m, qos=1)
    ok = done.wait(max(60.0, n / 500))
    t1 = time.monotonic()
    client.disconnect()
    client.loop_stop()
    return {"t0": t0, "t_acked": t1, "ok": ok, "messages": len(msgs), "readings": n}


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``agent`` or ``paho``."""
    p = argparse.ArgumentParser(prog="python -m bench.naive")
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("agent")
    a.add_argument("--queue", required=True)
    a.add_argument("--port", type=int, required=True)
    a.add_argument("--device", action="append", default=[], help="id=path")
    b = sub.add_parser("paho")
    b.add_argument("--port", type=int, required=True)
    b.add_argument("--n", type=int, required=True)
    b.add_argument("--per-msg", type=int, default=1)
    args = p.parse_args(argv)
    if args.cmd == "agent":
        devices = dict(d.split("=", 1) for d in args.device)
        return NaiveAgent(args.queue, args.port, devices).run()
    print(json.dumps(paho_publish(args.port, args.n, args.per_msg)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
