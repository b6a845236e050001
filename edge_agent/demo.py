"""The demo line: simulated scanners on real ptys feeding ``edge-agent run``, a private broker.

``edge-agent demo`` reads ``config/demo.toml``, puts a simulated scanner behind each device's
port path (a symlink to a fresh pty, as udev would), starts Mosquitto on the configured port
when the binary is installed, runs the daemon as a child process exactly as systemd would
(``edge-agent run -c config/demo.toml``), subscribes like the backend and prints every reading
with the topic it was published on. On exit it prints what was emitted, received and rejected.
"""

from __future__ import annotations

import importlib
import json
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.config import AgentConfig, load_config
from simulators import DemoSimulator, mosquitto


class _Backend:
    """Subscribes to the agent's tree and prints what arrives."""

    def __init__(self, cfg: AgentConfig, quiet: bool) -> None:
        self.quiet = quiet
        self.readings: set[str] = set()
        self.messages = 0
        self.lock = threading.Lock()
        b = cfg.mqtt.brokers[0]
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, "edge-agent-demo-backend", protocol=mqtt.MQTTv5
        )
        self.client.on_message = self._on_message
        root = f"{cfg.mqtt.topic_prefix}/v1/{cfg.node.site}/{cfg.node.line}/{cfg.node.agent_id}/#"
        self.client.on_connect = lambda c, _u, _f, _rc, _p=None: c.subscribe(root, qos=1)
        self.client.connect(b.host, b.port)
        self.client.loop_start()

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        topic = msg.topic
        if topic.endswith("/batch"):
            items = json.loads(msg.payload)["readings"]
        elif "/reading/" in topic:
            items = [json.loads(msg.payload)]
        elif "/parcel/" in topic or "/exception/" in topic:
            self._show(_event_line(topic, json.loads(msg.payload)))
            return
        else:
            self._show(f"{topic}  {msg.payload.decode(errors='replace')[:160]}")
            return
        with self.lock:
            self.messages += 1
            self.readings.update(r["id"] for r in items)
        for r in items:
            extra = f" ({r['symbology']})" if "symbology" in r else ""
            where = f"{topic} [{r['device']}]" if topic.endswith("/batch") else topic
            self._show(
                f"{r['ts'][11:23]}  {where}  seq={r['seq']:<5} {r['kind']:8} "
                f"{r['value'] if r['value'] is not None else '-'}{extra}"
            )

    def _show(self, line: str) -> None:
        if not self.quiet:
            print(line, flush=True)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _event_line(topic: str, e: dict[str, Any]) -> str:
    if e["schema"] == "edge-agent/parcel/v1":
        weight = f" {e['weight_g']:.0f} g" if e.get("weight_g") is not None else ""
        what = f"PARCEL    {e.get('waybill') or '(no waybill)'} {e.get('carrier') or ''}{weight}"
        return f"{e['ts'][11:23]}  {topic}  seq={e['seq']:<5} {what} seen by {e['devices']}"
    detail = e.get("code") or e.get("device") or e.get("details", "")
    return f"{e['ts'][11:23]}  {topic}  seq={e['seq']:<5} EXCEPTION {e['exception']} {detail}"


def _start_sims(cfg: AgentConfig, rate: float) -> list[DemoSimulator]:
    sims: list[DemoSimulator] = []
    for seed, (dev_id, dev) in enumerate(cfg.devices.items(), start=1):
        try:
            module = importlib.import_module(f"simulators.{dev.type}")
        except ModuleNotFoundError:
            print(f"demo: no simulator for {dev_id} ({dev.type}); skipped", file=sys.stderr)
            continue
        sim: DemoSimulator = module.for_demo(dev_id, dev, rate, seed)
        print(f"demo: {dev_id}: {sim.describe()}", flush=True)
        sims.append(sim)
    return sims


def _start_broker(cfg: AgentConfig, rundir: Path) -> mosquitto.Mosquitto | None:
    b = cfg.mqtt.brokers[0]
    if mosquitto.binary() is None:
        print(f"demo: mosquitto not installed; using the broker at {b.host}:{b.port}", flush=True)
        return None
    broker = mosquitto.Mosquitto(rundir / "broker", port=b.port)
    broker.start()
    print(f"demo: Mosquitto started on 127.0.0.1:{b.port} (data in {broker.dir})", flush=True)
    return broker


def run_demo(config: Path, seconds: float, rate: float, quiet: bool = False) -> int:
    """Run the demo line until ^C (or ``seconds``); returns the exit code."""
    cfg = load_config(config)
    rundir = cfg.queue.path.parent
    rundir.mkdir(parents=True, exist_ok=True)
    broker = _start_broker(cfg, rundir)
    sims = _start_sims(cfg, rate)
    backend = _Backend(cfg, quiet)
    log_path = rundir / "agent.log"
    with log_path.open("wb") as log:
        agent = subprocess.Popen(
            [sys.executable, "-m", "edge_agent", "run", "-c", str(config), "--log-format", "json"],
            stderr=log,
        )
    print(f"demo: edge-agent run -c {config} (pid {agent.pid}, log {log_path})", flush=True)
    print(
        f"demo: backend subscribed to {cfg.mqtt.topic_prefix}/v1/{cfg.node.site}/... ; ^C stops",
        flush=True,
    )
    time.sleep(0.5)
    t0 = time.monotonic()
    for s in sims:
        s.start()
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait(seconds if seconds > 0 else None)
    for s in sims:
        s.stop()
    emitted = sum(s.expected() for s in sims)
    deadline = time.monotonic() + 10
    while len(backend.readings) < emitted and time.monotonic() < deadline:
        time.sleep(0.05)
    elapsed = time.monotonic() - t0
    agent.send_signal(signal.SIGTERM)
    code = agent.wait(10)
    backend.close()
    _summary(sims, backend, log_path, elapsed, emitted, code)
    if broker is not None:
        broker.stop()
    return 0 if len(backend.readings) >= emitted and code == 0 else 1


def _summary(
    sims: list[DemoSimulator],
    backend: _Backend,
    log_path: Path,
    elapsed: float,
    emitted: int,
    code: int,
) -> None:
    rejects: Counter[str] = Counter()
    for line in log_path.read_text().splitlines():
        if '"frame_rejected"' in line:
            rejects[json.loads(line)["reason"]] += 1
    got = len(backend.readings)
    print("\n== demo summary ==")
    print(f"readings emitted by the simulators : {emitted}")
    print(f"readings received by the backend   : {got} in {backend.messages} messages")
    print(
        f"end-to-end rate                    : {got / elapsed:.0f} readings/s over {elapsed:.1f} s"
    )
    print(f"frames rejected by the agent       : {dict(rejects)}")
    print(f"agent exit code                    : {code} (log: {log_path})")
