"""The floor: the least CPU a durable Python agent can spend per reading, run as a peer.

Issue 13 asks for at most 100 µs of CPU per reading at 1,000 readings/s with p99 <= 5 ms. This
peer measures, in the same run as edge-agent, what that costs when nothing but the work that
no durable agent can skip is done, in the cheapest arrangement we know:

* **one thread**, one ``selectors`` loop over every pty and paho's socket (paho's external-loop
  API): no hand-off between threads, no GIL contention, no wake fd;
* per reading: split the line, the same reading JSON as edge-agent (UUIDv7 id, ISO time),
  a copy into a mapped journal file (kill -9 safety, as edge-agent's capture journal);
* **publish before commit**: readings are published ``--publish-ms`` (2) after the first of
  a batch arrived, one ``{"readings": [...]}`` message per batch at QoS 1, and committed to
  SQLite (WAL, ``synchronous=FULL``) every ``--commit-ms`` (20) with the PUBACK marks, so the
  fsync is off the latency path and amortised over ~20 readings.

No drivers, no screening, no supervision, no per-device state, no lanes, no window, no
metrics, no control socket, no retained states: it is not a product and reports what a
product cannot go below. It is still at least once across a broker outage (unacked readings
are re-published after the reconnect) and a kill -9 (committed rows not PUBACKed, and journal
lines past the last commit, are re-published at start), so its loss rows in the fault
scenarios are meaningful too.

Run as ``python -m bench.floor --queue DIR --port P --device ID=PATH ...`` (the benchmark starts
it; ``bench/run --peers floor``, where ``--gather-ms G`` sets its ``--publish-ms`` too, so both
agents trade the same latency for CPU). JSON events on stderr as the baseline's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import mmap
import os
import selectors
import signal
import sqlite3
import sys
import time
import tty
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.agents import AgentProc
from bench.lines import Line
from bench.naive import emit, sd_notify
from edge_agent.mqtt_loop import watch
from edge_agent.reading import iso_utc, uuid7

TOPIC = "edge/v1/BENCH/L1/floor/batch"
JOURNAL_BYTES = 64 << 20
#: Readings per message when re-publishing after a (re)connect.
RESEND_BATCH = 100


class Floor:
    """The single-threaded pipeline (see the module docstring)."""

    def __init__(
        self, qdir: Path, port: int, devices: dict[str, str], pub_s: float, commit_s: float
    ) -> None:
        qdir.mkdir(parents=True, exist_ok=True)
        self.port, self.pub_s, self.commit_s = port, pub_s, commit_s
        self.db = sqlite3.connect(qdir / "floor.db", isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("CREATE TABLE IF NOT EXISTS r(n INTEGER PRIMARY KEY, body BLOB, sent INT)")
        self.n = self.db.execute("SELECT coalesce(max(n), 0) FROM r").fetchone()[0]
        #: Readings not yet PUBACKed: n -> body (re-published after a reconnect).
        self.unacked: dict[int, bytes] = dict(
            self.db.execute("SELECT n, body FROM r WHERE sent = 0")
        )
        self.to_insert: list[tuple[int, bytes]] = []
        self.acked: list[int] = []
        self.batch: list[tuple[int, bytes]] = []
        self.batch_due: float | None = None
        self.flying: dict[int, list[int]] = {}  # mid -> row numbers
        self._open_journal(qdir / "floor.journal")
        self.sel = selectors.DefaultSelector()
        self.fds: dict[int, tuple[str, bytearray]] = {}
        for dev, path in devices.items():
            fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
            tty.setraw(fd)
            self.fds[fd] = (dev, bytearray())
            self.sel.register(fd, selectors.EVENT_READ)
            emit("port_opened", device=dev)
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="floor-agent", protocol=mqtt.MQTTv5
        )
        self.client.on_socket_register_write = lambda *_a: None
        self.client.on_socket_unregister_write = lambda *_a: None
        self.client.on_connect = self._on_connect
        self.client.on_publish = self._on_publish
        self.sock: Any = None
        self.stopping = False
        self._sig_r, sig_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        os.set_blocking(sig_w, False)
        signal.set_wakeup_fd(sig_w)  # SIGTERM ends the select at once
        self.sel.register(self._sig_r, selectors.EVENT_READ)

    # ---- journal -------------------------------------------------------------------------
    def _open_journal(self, path: Path) -> None:
        """Recover lines past the last commit into the queue, then start a fresh file."""
        if path.exists():
            for line in path.read_bytes().split(b"\n"):
                head, _, body = line.partition(b" ")
                if head.isdigit() and int(head) > self.n and body.endswith(b"}"):
                    self.n = int(head)
                    self.to_insert.append((self.n, body))
                    self.unacked[self.n] = body
        self._commit()  # before the journal is emptied
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        os.posix_fallocate(fd, 0, JOURNAL_BYTES)
        self.jmap = mmap.mmap(fd, JOURNAL_BYTES)
        os.close(fd)
        self.joff = 0

    def _journal(self, n: int, body: bytes) -> None:
        line = b"%d %s\n" % (n, body)
        end = self.joff + len(line)
        if end <= JOURNAL_BYTES:  # a bench run never fills 64 MiB between restarts
            self.jmap[self.joff : end] = line
            self.joff = end

    # ---- MQTT ----------------------------------------------------------------------------
    def _on_connect(self, _c: Any, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        if rc.is_failure:
            return
        emit("mqtt_connected")
        self.flying.clear()  # a new session: whatever was in flight is published again
        pending = sorted(self.unacked.items())
        for i in range(0, len(pending), RESEND_BATCH):
            self._publish(pending[i : i + RESEND_BATCH])

    def _on_publish(self, _c: Any, _u: Any, mid: int, rc: Any, _p: Any = None) -> None:
        rows = self.flying.pop(mid, [])
        if not rc.is_failure:
            for n in rows:
                if self.unacked.pop(n, None) is not None:
                    self.acked.append(n)

    def _publish(self, rows: list[tuple[int, bytes]]) -> None:
        payload = b'{"readings":[' + b",".join(b for _, b in rows) + b"]}"
        info = self.client.publish(TOPIC, payload, qos=1)
        if info.rc == mqtt.MQTT_ERR_SUCCESS:
            self.flying[info.mid] = [n for n, _ in rows]

    # ---- the loop ------------------------------------------------------------------------
    def _take(self, fd: int) -> None:
        dev, buf = self.fds[fd]
        try:
            buf += os.read(fd, 65536)
        except BlockingIOError:
            return
        *lines, rest = bytes(buf).split(b"\r\n")
        buf[:] = rest
        for line in lines:
            if not line:
                continue
            text = line.decode(errors="replace")
            aim, code = (text[:3], text[3:]) if text.startswith("]") else (None, text)
            self.n += 1
            wall = time.time_ns()
            body = json.dumps(
                {"schema": "edge-agent/reading/v1", "id": uuid7(), "agent": "floor",
                 "site": "BENCH", "line": "L1", "device": dev, "seq": self.n, "kind": "barcode",
                 "value": code, "ts": iso_utc(wall), "mono_ns": time.monotonic_ns(),
                 "boot_id": "bench", "raw": line.hex(), "aim": aim, "check": "none"},
                separators=(",", ":"),
            ).encode()  # fmt: skip
            self._journal(self.n, body)
            self.to_insert.append((self.n, body))
            self.unacked[self.n] = body
            self.batch.append((self.n, body))
        if self.batch and self.batch_due is None:
            self.batch_due = time.monotonic() + self.pub_s

    def _commit(self) -> None:
        if not self.to_insert and not self.acked:
            return
        self.db.execute("BEGIN")
        self.db.executemany("INSERT INTO r VALUES (?, ?, 0)", self.to_insert)
        self.db.executemany("UPDATE r SET sent = 1 WHERE n = ?", [(n,) for n in self.acked])
        self.db.execute("COMMIT")
        self.to_insert.clear()
        self.acked.clear()

    def run(self) -> None:
        """Read, publish, commit until SIGTERM; then commit and go."""
        c = self.client
        retry_at = 0.0
        next_commit = time.monotonic() + self.commit_s
        sd_notify("READY=1")
        while not self.stopping:
            now = time.monotonic()
            if c.socket() is None and now >= retry_at:
                with contextlib.suppress(OSError):  # the broker is down: try again shortly
                    if retry_at:
                        c.reconnect()
                    else:
                        c.connect("127.0.0.1", self.port, keepalive=30)
                retry_at = now + 0.2
            self.sock = watch(self.sel, self.sock, c.socket(), c.want_write())
            due = [now + 10.0, next_commit] if (self.to_insert or self.acked) else [now + 10.0]
            due += [self.batch_due] if self.batch_due is not None else []
            due += [retry_at] if c.socket() is None else []
            for key, events in self.sel.select(max(0.0, min(due) - now)):
                if key.fileobj is self.sock:
                    if events & selectors.EVENT_READ:
                        c.loop_read()
                    if events & selectors.EVENT_WRITE and c.socket() is not None:
                        c.loop_write()
                elif key.fd == self._sig_r:
                    os.read(self._sig_r, 512)
                else:
                    self._take(key.fd)
            now = time.monotonic()
            if self.batch_due is not None and now >= self.batch_due:
                if c.is_connected():
                    self._publish(self.batch)
                self.batch, self.batch_due = [], None  # unacked: re-published on reconnect
            if c.want_write() and c.socket() is not None:
                c.loop_write()
            if now >= next_commit:
                self._commit()
                next_commit = now + self.commit_s
            if c.socket() is not None:
                c.loop_misc()
        self._commit()
        emit("stopped")


def main() -> None:
    """``python -m bench.floor``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queue", type=Path, required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--device", action="append", default=[], help="ID=PATH")
    ap.add_argument("--publish-ms", type=float, default=2.0)
    ap.add_argument("--commit-ms", type=float, default=20.0)
    args = ap.parse_args()
    devices = dict(d.split("=", 1) for d in args.device)
    floor = Floor(args.queue, args.port, devices, args.publish_ms / 1000, args.commit_ms / 1000)

    def stop(*_a: object) -> None:
        floor.stopping = True

    signal.signal(signal.SIGTERM, stop)
    floor.run()


class FloorAgent(AgentProc):
    """``python -m bench.floor`` as a peer (``bench/run --peers floor``)."""

    name = "floor"

    def __init__(self, rundir: Path, broker_port: int, line: Line, publish_ms: float) -> None:
        super().__init__(rundir, broker_port, line)
        self.publish_ms = publish_ms

    def command(self) -> list[str]:
        """argv."""
        cmd = [sys.executable, "-m", "bench.floor", "--queue", str(self.rundir / "q")]
        cmd += ["--port", str(self.broker_port)]
        for dev, port in zip(self.line.ids, self.line.ports, strict=True):
            cmd += ["--device", f"{dev}={port.link}"]
        return [*cmd, "--publish-ms", str(self.publish_ms)]

    def db_path(self) -> Path:
        """Queue file."""
        return self.rundir / "q" / "floor.db"

    def counts(self) -> tuple[int, int]:
        """Rows committed, rows PUBACKed (marked within ``--commit-ms``)."""
        total, sent = self._reader().execute("SELECT count(*), total(sent) FROM r").fetchone()
        return int(total), int(sent)

    def stop_report(self) -> dict[str, Any]:
        """Clean stop or not."""
        return {"clean_stop": any(e.get("event") == "stopped" for e in self.events())}


if __name__ == "__main__":
    main()
