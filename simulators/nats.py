"""A 3-node NATS cluster with its MQTT listener on free loopback ports (Debian's nats-server).

Every node runs JetStream (the MQTT sessions, retained messages and QoS 1 messages live in
JetStream streams), the MQTT listener (MQTT 3.1.1, QoS 0/1) with ``stream_replicas: 3`` and
``consumer_replicas: 3`` so a session survives the loss of any one node, and a monitoring port
(``/connz`` says which node an MQTT client is connected to). Nodes can be killed (-9) and
restarted on the same ports and data.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from simulators import end_process
from simulators.mosquitto import free_ports

CONF = """\
server_name: {name}
listen: 127.0.0.1:{client}
http: 127.0.0.1:{http}
jetstream {{ store_dir: "{dir}/js", max_memory_store: 64MB, max_file_store: 1GB }}
cluster {{
  name: edge
  listen: 127.0.0.1:{route}
  routes: [{routes}]
}}
mqtt {{
  listen: 127.0.0.1:{mqtt}
  stream_replicas: 3
  consumer_replicas: 3
  ack_wait: "10s"
  max_ack_pending: 4000
}}
"""


def binary() -> str | None:
    """Path of nats-server, if installed."""
    return shutil.which("nats-server") or (
        "/usr/sbin/nats-server" if Path("/usr/sbin/nats-server").exists() else None
    )


class NatsNode:
    """One node of the cluster."""

    def __init__(self, exe: str, name: str, workdir: Path, ports: dict[str, int]) -> None:
        self.exe, self.name, self.dir, self.ports = exe, name, workdir, ports
        self.proc: subprocess.Popen[bytes] | None = None
        self.conf = workdir / "nats.conf"

    @property
    def mqtt_port(self) -> int:
        return self.ports["mqtt"]

    def start(self) -> None:
        """Start; returns once the MQTT port accepts connections."""
        log = (self.dir / "nats.log").open("ab")
        self.proc = subprocess.Popen(
            [self.exe, "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                msg = f"nats-server {self.name} exited: {(self.dir / 'nats.log').read_text()}"
                raise RuntimeError(msg)
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.mqtt_port), 0.2),
            ):
                return
            time.sleep(0.1)
        msg = f"nats-server {self.name}: MQTT port not open"
        raise TimeoutError(msg)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop with ``sig`` (SIGKILL for a crash)."""
        if self.proc is None:
            return
        end_process(self.proc, sig, 15)
        self.proc = None

    def mqtt_clients(self) -> list[str]:
        """Client ids of the MQTT clients connected to this node."""
        url = f"http://127.0.0.1:{self.ports['http']}/connz?limit=1000"
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                data: dict[str, Any] = json.loads(r.read())
        except OSError:
            return []
        return [
            str(c["mqtt_client"]) for c in data.get("connections") or [] if c.get("mqtt_client")
        ]

    def jsz(self) -> dict[str, Any]:
        """JetStream's streams and consumers as this node sees them (``/jsz``)."""
        url = f"http://127.0.0.1:{self.ports['http']}/jsz?consumers=true&config=true"
        with urllib.request.urlopen(url, timeout=5) as r:
            data: dict[str, Any] = json.loads(r.read())
        return data

    def healthy(self) -> bool:
        """JetStream reports healthy on this node (``/healthz?js-enabled-only=true``)."""
        url = f"http://127.0.0.1:{self.ports['http']}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return bool(json.loads(r.read()).get("status") == "ok")
        except OSError:
            return False


class NatsCluster:
    """Three nodes, full mesh of routes."""

    def __init__(self, workdir: Path, size: int = 3) -> None:
        exe = binary()
        if exe is None:
            msg = "nats-server not found (apt-get install nats-server)"
            raise FileNotFoundError(msg)
        ports = free_ports(4 * size)
        self.nodes: list[NatsNode] = []
        names = [f"n{i + 1}" for i in range(size)]
        node_ports = [
            dict(zip(("client", "route", "mqtt", "http"), ports[4 * i : 4 * i + 4], strict=True))
            for i in range(size)
        ]
        for name, p in zip(names, node_ports, strict=True):
            d = workdir / name
            d.mkdir(parents=True, exist_ok=True)
            routes = ", ".join(
                f"nats-route://127.0.0.1:{q['route']}" for q in node_ports if q is not p
            )
            node = NatsNode(exe, name, d, p)
            node.conf.write_text(CONF.format(name=name, dir=d, routes=routes, **p))
            self.nodes.append(node)

    @property
    def mqtt_ports(self) -> list[int]:
        return [n.mqtt_port for n in self.nodes]

    def start(self, timeout: float = 60.0) -> None:
        """Start every node and wait until JetStream is healthy on all of them."""
        for n in self.nodes:
            n.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(n.healthy() for n in self.nodes):
                return
            time.sleep(0.2)
        msg = "NATS cluster: JetStream not healthy on every node"
        raise TimeoutError(msg)

    def node_of(self, client_id: str) -> NatsNode | None:
        """The node ``client_id`` is connected to."""
        return next((n for n in self.nodes if client_id in n.mqtt_clients()), None)

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()
