"""30 agents, one broker that restarts: connection attempts per 100 ms window (issue 14).

Run: ``.venv/bin/python -m bench.reconnect_jitter [--agents 30] [--code DIR]``. ``--code``
runs the agents from another checkout (e.g. ``/work/main``, for the behaviour before jitter);
the measuring parts always come from this one. Takes ~1 min (30 agent processes start).

A TCP proxy in front of a private Mosquitto counts every connection attempt (accepted by the
proxy even while the broker is down, then closed) with its time. The agents connect through
it; once all are connected the broker is stopped, restarted 1 s later, and the attempts in the
10 s after the stop are put in 100 ms windows.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from simulators.mosquitto import Mosquitto, free_port

ROOT = Path(__file__).resolve().parent.parent


class CountingProxy(threading.Thread):
    """Accepts on ``port``, forwards to ``upstream``; remembers when each connection came."""

    def __init__(self, upstream: int) -> None:
        super().__init__(daemon=True)
        self.upstream = upstream
        self.port = free_port()
        self.accepts: list[float] = []
        self.sel = selectors.DefaultSelector()
        self.lsock = socket.create_server(("127.0.0.1", self.port), backlog=512)
        self.lsock.setblocking(False)
        self.sel.register(self.lsock, selectors.EVENT_READ, None)

    def run(self) -> None:
        while True:
            for key, _ in self.sel.select(0.5):
                if key.data is None:
                    self._accept()
                elif isinstance(key.fileobj, socket.socket):  # every registered one is
                    self._pipe(key.fileobj, key.data)

    def _accept(self) -> None:
        try:
            c, _ = self.lsock.accept()
        except OSError:
            return
        self.accepts.append(time.time())
        try:
            u = socket.create_connection(("127.0.0.1", self.upstream), 1.0)
        except OSError:
            c.close()  # broker down: the attempt is counted, and refused
            return
        for a, b in ((c, u), (u, c)):
            a.setblocking(False)
            self.sel.register(a, selectors.EVENT_READ, b)

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            data = src.recv(65536)
        except OSError:
            data = b""
        if data:
            try:
                dst.setblocking(True)
                dst.sendall(data)
                dst.setblocking(False)
                return
            except OSError:
                pass
        for s in (src, dst):
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(s)
            s.close()


def _config(d: Path, port: int, i: int) -> Path:
    cfg = d / f"agent{i}.toml"
    cfg.write_text(
        f'[node]\nsite = "S"\nline = "L"\nagent_id = "a{i:02d}"\n'
        f'[mqtt]\nbrokers = [{{ host = "127.0.0.1", port = {port} }}]\n'
        f'[queue]\npath = "{d / f"q{i}" / "queue.db"}"\n'
        f'[log]\nformat = "json"\nlevel = "warning"\n[control]\nenabled = false\n'
    )
    return cfg


def measure(n: int, code: Path) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="jitter-") as tmp:
        d = Path(tmp)
        broker = Mosquitto(d / "broker")
        broker.start()
        proxy = CountingProxy(broker.port)
        proxy.start()
        env = {**os.environ, "PYTHONPATH": str(code)}
        procs = []
        for i in range(n):
            cmd = [sys.executable, "-m", "edge_agent", "run", "-c", str(_config(d, proxy.port, i))]
            out = subprocess.DEVNULL
            procs.append(subprocess.Popen(cmd, cwd=code, env=env, stdout=out, stderr=out))
        try:
            deadline = time.time() + 120
            while len(proxy.accepts) < n and time.time() < deadline:
                time.sleep(0.2)
            time.sleep(3.0)  # all connected and settled
            t_stop = time.time()
            broker.stop()
            time.sleep(1.0)
            broker.start()
            time.sleep(9.0)
        finally:
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                p.wait(20)
            broker.stop()
        after = [t - t_stop for t in proxy.accepts if t >= t_stop]
        windows = Counter(int(t * 10) for t in after)
        return {
            "agents": n,
            "code": str(code),
            "attempts": len(after),
            "max_per_100ms": max(windows.values(), default=0),
            "windows_used": len(windows),
            "per_100ms": {f"{w / 10:.1f}": c for w, c in sorted(windows.items())},
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agents", type=int, default=30)
    ap.add_argument("--code", type=Path, default=ROOT)
    args = ap.parse_args()
    print(json.dumps(measure(args.agents, args.code.resolve()), indent=1))


if __name__ == "__main__":
    main()
