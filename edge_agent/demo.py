"""The demo line: simulated scanners on real ptys feeding ``edge-agent run``, a private broker.

``edge-agent demo`` reads ``config/demo.toml`` and makes a private copy of it for this run: the
directory holding the queue (``/tmp/edge-agent-demo``) becomes a fresh temporary directory, and
the broker and the TCP simulators get ports verified free now. So every run starts from an
empty queue (seq 1), a broker with no retained messages or sessions from an earlier run, and
never talks to a broker some earlier run left behind. It puts a simulated device behind each
device's port (a symlink to a fresh pty, as udev would, or a loopback TCP port), starts
Mosquitto when the binary is installed, runs the daemon as a child process exactly as systemd
would (``edge-agent run -c <copy>``), subscribes like the backend and prints every reading with
the topic it was published on.

On exit (``--seconds`` or ^C) it waits until the backend has every reading emitted so far,
stops the daemon while the simulated devices are still there (so the end of the demo is not a
``device_offline``), then the simulators and the broker, prints what was emitted, received and
rejected, and removes its temporary directory.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
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
        #: lowest seq received per device (1 when the queue started empty)
        self.first_seq: dict[str, int] = {}
        self.exceptions: Counter[str] = Counter()
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
            event = json.loads(msg.payload)
            if "/exception/" in topic:
                with self.lock:
                    self.exceptions[str(event.get("exception"))] += 1
            self._show(_event_line(topic, event))
            return
        else:
            self._show(f"{topic}  {msg.payload.decode(errors='replace')[:160]}")
            return
        with self.lock:
            self.messages += 1
            self.readings.update(r["id"] for r in items)
            for r in items:
                dev, seq = str(r["device"]), int(r["seq"])
                self.first_seq[dev] = min(seq, self.first_seq.get(dev, seq))
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


#: ``socket://127.0.0.1:N`` device ports and ``tcp_port = N`` (Modbus TCP on loopback).
_TCP_URL = re.compile(r"socket://127\.0\.0\.1:(\d+)\b")
_TCP_PORT = re.compile(r"^(\s*tcp_port\s*=\s*)(\d+)\b", re.MULTILINE)


def private_config(config: Path, rundir: Path, own_broker: bool) -> Path:
    """Write this run's copy of the demo ``config`` into ``rundir``; returns its path.

    The directory of the queue (and everything under it: control socket, pty symlinks) moves
    into ``rundir``; loopback TCP ports of the simulators, and of the broker when the demo
    starts its own (``own_broker``), become ports that are free now.
    """
    text = config.read_text(encoding="utf-8")
    base = load_config(config, secrets=False)
    old_dir = str(base.queue.path.parent).rstrip("/")
    text = re.sub(rf"{re.escape(old_dir)}(?=[/\"])", str(rundir), text)
    text = _TCP_URL.sub(lambda _m: f"socket://127.0.0.1:{mosquitto.free_port()}", text)
    text = _TCP_PORT.sub(lambda m: f"{m[1]}{mosquitto.free_port()}", text)
    if own_broker:
        old = base.mqtt.brokers[0].port
        text, n = re.subn(rf"\bport\s*=\s*{old}\b", f"port = {mosquitto.free_port()}", text)
        if n != 1:
            msg = f"{config}: cannot find the first broker's port = {old} to move it"
            raise ValueError(msg)
    copy = rundir / "demo.toml"
    copy.write_text(text, encoding="utf-8")
    return copy


@contextlib.contextmanager
def _usb_sim_in(rundir: Path) -> Iterator[None]:
    """The simulated USB bus (HID scanners) in ``rundir``, for the daemon started from here."""
    from simulators.hid_scanner import ENV_BACKEND  # noqa: PLC0415

    before = os.environ.get(ENV_BACKEND)
    (rundir / "usb").mkdir()
    os.environ[ENV_BACKEND] = f"sim:{rundir / 'usb'}"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(ENV_BACKEND, None)
        else:
            os.environ[ENV_BACKEND] = before


def run_demo(config: Path, seconds: float, rate: float, quiet: bool = False) -> int:
    """Run the demo line until ^C (or ``seconds``); returns the exit code.

    Everything lives in a fresh temporary directory, removed on the way out whatever happens.
    """
    rundir = Path(tempfile.mkdtemp(prefix="edge-agent-demo-"))
    rundir.chmod(0o755)  # Mosquitto may run as user mosquitto (when started as root)
    try:
        with _usb_sim_in(rundir):
            return _run(config, rundir, seconds, rate, quiet)
    finally:
        shutil.rmtree(rundir, ignore_errors=True)


def _run(config: Path, rundir: Path, seconds: float, rate: float, quiet: bool) -> int:
    private = private_config(config, rundir, own_broker=mosquitto.binary() is not None)
    cfg = load_config(private)
    print(f"demo: fresh state in {rundir} (removed at the end)", flush=True)
    with contextlib.ExitStack() as stack:
        broker = _start_broker(cfg, rundir)
        if broker is not None:
            stack.callback(broker.stop)
        sims: list[DemoSimulator] = []
        # ExitStack runs these last-in first-out: the agent stops first, then the
        # simulators, then the broker.
        stack.callback(_stop_sims, sims)
        sims += _start_sims(cfg, rate)
        backend = _Backend(cfg, quiet)
        stack.callback(backend.close)
        log_path = rundir / "agent.log"
        with log_path.open("wb") as log:
            agent = subprocess.Popen(
                [sys.executable, "-m", "edge_agent", "run", "-c", str(private),
                 "--log-format", "json"],
                stderr=log,
            )  # fmt: skip
        stack.callback(_stop_agent, agent)
        print(f"demo: edge-agent run -c {private} (pid {agent.pid})", flush=True)
        print(
            f"demo: backend subscribed to {cfg.mqtt.topic_prefix}/v1/{cfg.node.site}/... ; "
            "^C stops",
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
        # The devices stay live until the agent is gone: wait until the backend has what was
        # emitted so far (later readings count as received too), then stop the agent.
        emitted = sum(s.expected() for s in sims)
        deadline = time.monotonic() + 10
        while len(backend.readings) < emitted and time.monotonic() < deadline:
            time.sleep(0.05)
        elapsed = time.monotonic() - t0
        code = _stop_agent(agent)
        time.sleep(0.2)  # the last messages the agent published reach the backend
        _summary(sims, backend, log_path, elapsed, emitted, code)
    return 0 if len(backend.readings) >= emitted and code == 0 else 1


def _stop_sims(sims: list[DemoSimulator]) -> None:
    for s in sims:
        s.stop()


def _stop_agent(agent: subprocess.Popen[bytes]) -> int:
    """SIGTERM the daemon and wait for it (SIGKILL after 15 s); returns its exit code."""
    if agent.poll() is None:
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(15)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait(5)
    return agent.returncode


def _summary(
    sims: list[DemoSimulator],
    backend: _Backend,
    log_path: Path,
    elapsed: float,
    emitted: int,
    code: int,
) -> None:
    rejects: Counter[str] = Counter()
    log = log_path.read_text(errors="replace").splitlines()
    for line in log:
        if '"frame_rejected"' in line:
            rejects[json.loads(line)["reason"]] += 1
    got = len(backend.readings)
    firsts = sorted(set(backend.first_seq.values()))
    print("\n== demo summary ==")
    print(f"readings emitted by the simulators : {emitted}")
    print(f"readings received by the backend   : {got} in {backend.messages} messages")
    print(
        f"end-to-end rate                    : {got / elapsed:.0f} readings/s over {elapsed:.1f} s"
    )
    print(f"first seq of every device          : {', '.join(map(str, firsts)) or '-'}")
    print(f"frames rejected by the agent       : {dict(rejects)}")
    print(f"station exceptions                 : {dict(backend.exceptions)}")
    print(f"agent exit code                    : {code}")
    if code != 0 or got < emitted:  # the log goes with the temporary directory: show its end
        print("last lines of the agent's log:\n  " + "\n  ".join(log[-20:]))
