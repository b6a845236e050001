"""Node-RED as a peer: installed with npm into a cache directory, run as a subprocess.

The flow is what a Node-RED user wires for the same job: one ``serial in`` per scanner (split
on LF, as the scanners' CR LF framing ends), a ``function`` node that builds a reading.v1-like
JSON (uuid id, device, seq, value, AIM id, time, raw bytes; about the size of edge-agent's),
and one ``mqtt out`` at QoS 1, MQTT 5, to the benchmark's private broker. Node-RED has no queue:
what it cannot publish while disconnected is dropped, which the outage scenario shows.

Readiness is read from its log: ``Started flows``, then one ``serial port ... opened`` per
scanner and ``Connected to broker``. No editor: ``httpAdminRoot`` and ``httpNodeRoot`` are
false, so Node-RED opens no HTTP port at all.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.agents import AgentProc
from bench.lines import LINE, SITE, Line

PACKAGES = ("node-red", "node-red-node-serialport")
DEFAULT_CACHE = Path.home() / ".cache" / "edge-agent-bench" / "node-red"
#: mqtt.js reconnect period (ms); edge-agent runs with ``reconnect_max_s = 1``.
RECONNECT_MS = 1000

FUNCTION = """\
const crypto = global.get('crypto');
const raw = msg.payload;
const text = raw.replace(/[\\r\\n]+$/, '');
const aim = text.startsWith(']') ? text.slice(0, 3) : null;
const seq = (context.get('seq') || 0) + 1;
context.set('seq', seq);
const now = Date.now();
msg.topic = 'edge/v1/%(site)s/%(line)s/node-red/reading/%(device)s';
msg.payload = JSON.stringify({
  schema: 'edge-agent/reading/v1', id: crypto.randomUUID(), agent: 'node-red',
  site: '%(site)s', line: '%(line)s', device: '%(device)s', seq: seq, kind: 'barcode',
  value: aim ? text.slice(3) : text, ts: new Date(now).toISOString(), mono_ns: now * 1e6,
  boot_id: 'bench', raw: Buffer.from(raw).toString('hex'), aim: aim, check: 'none'
});
return msg;
"""

SETTINGS = """\
module.exports = {
  userDir: %(user_dir)s,
  flowFile: "flows.json",
  credentialSecret: false,
  httpAdminRoot: false,
  httpNodeRoot: false,
  uiHost: "127.0.0.1",
  mqttReconnectTime: %(reconnect)d,
  serialReconnectTime: 1000,
  functionGlobalContext: { crypto: require("crypto") },
  logging: { console: { level: "info", metrics: false, audit: false } },
  telemetry: { enabled: false },
  diagnostics: { enabled: false },
};
"""


class PeerUnavailableError(RuntimeError):
    """The peer cannot run here (npm/node missing, install failed); the message says why."""


def red_js(cache: Path) -> Path:
    """Node-RED's entry script inside the cache."""
    return cache / "node_modules" / "node-red" / "red.js"


def installed(cache: Path) -> bool:
    """Both packages are in the cache already."""
    return (
        red_js(cache).is_file()
        and (cache / "node_modules" / "node-red-node-serialport" / "package.json").is_file()
    )


def versions(cache: Path) -> dict[str, str]:
    """Installed package versions (from their package.json) and node's version."""
    out: dict[str, str] = {}
    for pkg in PACKAGES:
        try:
            meta = json.loads((cache / "node_modules" / pkg / "package.json").read_text())
            out[pkg] = str(meta.get("version"))
        except (OSError, ValueError):
            out[pkg] = "not installed"
    node = shutil.which("node")
    if node:
        res = subprocess.run([node, "--version"], capture_output=True, text=True, check=False)
        out["node"] = res.stdout.strip()
    return out


def ensure_installed(cache: Path, say: Callable[[str], None] = print) -> dict[str, Any]:
    """``npm install --prefix <cache>`` unless already there; PeerUnavailableError says why."""
    if shutil.which("node") is None:
        msg = "node not found on PATH (install Node.js >= 18 to run the Node-RED peer)"
        raise PeerUnavailableError(msg)
    t0 = time.monotonic()
    fresh = not installed(cache)
    if fresh:
        npm = shutil.which("npm")
        if npm is None:
            msg = "npm not found on PATH (needed to install node-red into the cache)"
            raise PeerUnavailableError(msg)
        cache.mkdir(parents=True, exist_ok=True)
        say(f"installing {' '.join(PACKAGES)} with npm into {cache} ...")
        cmd = [npm, "install", "--prefix", str(cache), "--no-audit", "--no-fund", *PACKAGES]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
        except subprocess.TimeoutExpired as err:
            msg = "npm install timed out after 900 s"
            raise PeerUnavailableError(msg) from err
        if res.returncode != 0 or not installed(cache):
            msg = f"npm install failed (exit {res.returncode}): {res.stderr.strip()[-500:]}"
            raise PeerUnavailableError(msg)
    return {
        "cache": str(cache),
        "installed_now": fresh,
        "install_s": time.monotonic() - t0,
        "versions": versions(cache),
    }


def flow(line: Line, broker_port: int) -> list[dict[str, Any]]:
    """The flow: serial in (one per scanner) -> function -> mqtt out (QoS 1, MQTT 5)."""
    nodes: list[dict[str, Any]] = [
        {"id": "tab", "type": "tab", "label": "bench", "disabled": False},
        {
            "id": "broker",
            "type": "mqtt-broker",
            "name": "bench",
            "broker": "127.0.0.1",
            "port": str(broker_port),
            "clientid": "node-red-bench",
            "autoConnect": True,
            "usetls": False,
            "protocolVersion": "5",
            "keepalive": "60",
            "cleansession": True,
            "autoUnsubscribe": True,
            "birthTopic": "",
            "closeTopic": "",
            "willTopic": "",
        },
        {
            "id": "out",
            "type": "mqtt out",
            "z": "tab",
            "name": "readings",
            "topic": "",
            "qos": "1",
            "retain": "false",
            "broker": "broker",
            "wires": [],
        },
    ]
    for dev, port in zip(line.ids, line.ports, strict=True):
        nodes += [
            {
                "id": f"port-{dev}",
                "type": "serial-port",
                "name": dev,
                "serialport": str(port.link),
                "serialbaud": "9600",
                "databits": "8",
                "parity": "none",
                "stopbits": "1",
                "waitfor": "",
                "dtr": "none",
                "rts": "none",
                "cts": "none",
                "dsr": "none",
                "newline": "\\n",
                "bin": "false",
                "out": "char",
                "addchar": "",
                "responsetimeout": "10000",
            },
            {
                "id": f"in-{dev}",
                "type": "serial in",
                "z": "tab",
                "name": dev,
                "serial": f"port-{dev}",
                "wires": [[f"fn-{dev}"]],
            },
            {
                "id": f"fn-{dev}",
                "type": "function",
                "z": "tab",
                "name": f"reading {dev}",
                "func": FUNCTION % {"site": SITE, "line": LINE, "device": dev},
                "outputs": 1,
                "wires": [["out"]],
            },
        ]
    return nodes


class NodeRedAgent(AgentProc):
    """``node red.js --settings <userDir>/settings.js`` with the flow above.

    Args:
        rundir: its directory (the userDir lives in ``<rundir>/user``).
        broker_port: Mosquitto on 127.0.0.1.
        line: the scanners.
        cache: where npm installed node-red.
    """

    name = "node-red"
    has_queue = False

    def __init__(self, rundir: Path, broker_port: int, line: Line, cache: Path) -> None:
        super().__init__(rundir, broker_port, line)
        self.cache = cache
        self.user_dir = rundir / "user"
        self.user_dir.mkdir(parents=True, exist_ok=True)
        (self.user_dir / "flows.json").write_text(json.dumps(flow(line, broker_port), indent=1))
        (self.user_dir / "settings.js").write_text(
            SETTINGS % {"user_dir": json.dumps(str(self.user_dir)), "reconnect": RECONNECT_MS}
        )

    def command(self) -> list[str]:
        """argv."""
        node = shutil.which("node") or "node"
        return [
            node,
            str(red_js(self.cache)),
            "--settings",
            str(self.user_dir / "settings.js"),
            "--userDir",
            str(self.user_dir),
        ]

    def start(self, *, append: bool = False) -> None:
        """Start; stdout and stderr go to the log (Node-RED logs on stdout)."""
        self._log_from = self.log_path.stat().st_size if append and self.log_path.exists() else 0
        with self.log_path.open("ab" if append else "wb") as log:
            self.t_start = time.monotonic()
            self.t_ready = None
            self.proc = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "NODE_ENV": "production"},
                cwd=self.rundir,
            )

    def wait_ready(self, timeout: float = 60.0) -> float:
        """Seconds from process start to ``Started flows`` in the log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "Started flows" in self.log_text():
                self.t_ready = time.monotonic()
                return self.t_ready - self.t_start
            if self.proc is not None and self.proc.poll() is not None:
                break
            time.sleep(0.01)
        msg = f"node-red did not start its flows within {timeout} s:\n{self.log_tail()}"
        raise TimeoutError(msg)

    def wait_running(self, timeout: float = 30.0) -> None:
        """Every serial port opened and the broker connected (from the log)."""
        deadline = time.monotonic() + timeout
        want = len(self.line.ids)
        while time.monotonic() < deadline:
            text = self.log_text()
            opened = sum(f"serial port {p.link} opened" in text for p in self.line.ports)
            if opened >= want and "Connected to broker" in text:
                return
            if self.proc is not None and self.proc.poll() is not None:
                break
            time.sleep(0.02)
        msg = f"node-red not running (ports/broker) within {timeout} s:\n{self.log_tail()}"
        raise TimeoutError(msg)

    def events(self) -> list[dict[str, Any]]:
        """Node-RED's log is text, not JSON events."""
        return []

    def db_path(self) -> Path:
        """No queue file: Node-RED keeps nothing on disk."""
        return self.rundir / "none"

    def counts(self) -> tuple[int, int]:
        """No queue to read counts from."""
        msg = "node-red has no queue"
        raise NotImplementedError(msg)

    def stop_report(self) -> dict[str, Any]:
        """Whether the log shows the flows stopped."""
        return {"clean_stop": "Stopped flows" in self.log_text()}
