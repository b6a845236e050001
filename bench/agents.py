"""The two agents under test as subprocesses: edge-agent (``edge-agent run``) and the baseline.

Both get the same scanners, the same broker, a ``NOTIFY_SOCKET`` we bind, and the same
questions: when were you READY, how much did you commit and how much was PUBACKed (read from
their queue files, read-only), how long from SIGTERM to exit.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.common import NotifySocket
from bench.lines import LINE, SITE, Line

ROOT = Path(__file__).resolve().parent.parent


class AgentProc:
    """An agent process under test.

    Args:
        rundir: its own directory (config, queue, logs, notify socket).
        broker_port: Mosquitto on 127.0.0.1.
        line: the scanners it reads.
    """

    name = "agent"
    #: Keeps a queue file the benchmark can read counts from (Node-RED has none).
    has_queue = True

    def __init__(self, rundir: Path, broker_port: int, line: Line) -> None:
        self.rundir = rundir
        self.broker_port = broker_port
        self.line = line
        self.proc: subprocess.Popen[bytes] | None = None
        self.t_start = 0.0
        self.t_ready: float | None = None
        self.exit_code: int | None = None
        self.killed = False  # SIGTERM was not enough: SIGKILL after the timeout
        self.log_path = rundir / f"{self.name}.log"
        self._notify: NotifySocket | None = None
        self._con: sqlite3.Connection | None = None
        self._log_from = 0  # where the current process's log starts (restarts append)
        self.cwd = ROOT  # ``python -m`` imports from here first
        rundir.mkdir(parents=True, exist_ok=True)

    # ---- subclass hooks --------------------------------------------------------------
    def command(self) -> list[str]:
        """argv of the agent."""
        raise NotImplementedError

    def db_path(self) -> Path:
        """Its queue file."""
        raise NotImplementedError

    def counts(self) -> tuple[int, int]:
        """(readings committed, readings PUBACKed and marked so) from the queue file."""
        raise NotImplementedError

    def stop_report(self) -> dict[str, Any]:
        """What the agent's log says about its stop."""
        raise NotImplementedError

    # ---- lifecycle -------------------------------------------------------------------
    @property
    def pid(self) -> int:
        """Process id."""
        assert self.proc is not None
        return self.proc.pid

    def start(self, *, append: bool = False) -> None:
        """Start with ``NOTIFY_SOCKET`` set; stderr goes to the log file (appended: a restart)."""
        if self._notify is not None:
            self._notify.close()
        # AF_UNIX paths are limited to 107 bytes: bind in a short temporary directory.
        self._notify = NotifySocket(Path(tempfile.mkdtemp(prefix="bench-notify-")) / "sock")
        env = {**os.environ, "NOTIFY_SOCKET": str(self._notify.path)}
        self._log_from = self.log_path.stat().st_size if append and self.log_path.exists() else 0
        with self.log_path.open("ab" if append else "wb") as log:
            self.t_start = time.monotonic()
            self.t_ready = None
            self.proc = subprocess.Popen(
                self.command(),
                stdout=subprocess.DEVNULL,
                stderr=log,
                env=env,
                cwd=self.cwd,
            )

    def wait_ready(self, timeout: float = 60.0) -> float:
        """Seconds from process start to READY=1."""
        assert self._notify is not None
        self.t_ready = self._notify.wait_for("READY=1", timeout)
        if self.t_ready is None:
            msg = f"{self.name} not READY within {timeout} s:\n{self.log_tail()}"
            raise TimeoutError(msg)
        return self.t_ready - self.t_start

    def wait_running(self, timeout: float = 30.0) -> None:
        """Wait until every scanner port is open and the broker connection is up."""
        deadline = time.monotonic() + timeout
        want = len(self.line.ids)
        while time.monotonic() < deadline:
            events = self.events()
            opened = {e.get("device") for e in events if e.get("event") == "port_opened"}
            if len(opened) >= want and any(e.get("event") == "mqtt_connected" for e in events):
                return
            if self.proc is not None and self.proc.poll() is not None:
                break
            time.sleep(0.02)
        msg = f"{self.name} not running (ports/broker) within {timeout} s:\n{self.log_tail()}"
        raise TimeoutError(msg)

    def log_text(self) -> str:
        """The log of the current process (since the last start)."""
        with self.log_path.open("rb") as fh:
            fh.seek(self._log_from)
            return fh.read().decode(errors="replace")

    def events(self) -> list[dict[str, Any]]:
        """JSON log lines of the current process so far."""
        out = []
        for raw in self.log_text().splitlines():
            if raw.startswith("{"):
                try:
                    out.append(json.loads(raw))
                except ValueError:
                    continue
        return out

    def log_tail(self, lines: int = 30) -> str:
        """Last lines of the log, for error messages."""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def terminate(self, timeout: float = 30.0) -> float:
        """SIGTERM; seconds until the process has exited (SIGKILL after ``timeout``)."""
        assert self.proc is not None
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.exit_code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.exit_code = self.proc.wait()
            self.killed = True
        return time.monotonic() - t0

    def kill9(self) -> None:
        """SIGKILL, as a crash: no chance to flush or say goodbye."""
        assert self.proc is not None
        self.proc.kill()
        self.exit_code = self.proc.wait()

    def close(self) -> None:
        """Kill if still running; release the notify socket and DB connection."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self._notify is not None:
            self._notify.close()
        if self._con is not None:
            self._con.close()
            self._con = None

    def _reader(self) -> sqlite3.Connection:
        if self._con is None:
            self._con = sqlite3.connect(
                f"file:{self.db_path()}?mode=ro", uri=True, isolation_level=None, timeout=5
            )
        return self._con


class EdgeAgent(AgentProc):
    """``python -m edge_agent run -c <config>`` with defaults except the queue bound."""

    name = "edge-agent"
    AGENT_ID = "bench-edge"

    #: Source tree the agent runs from (``--edge-root``: try a prototype against the same run).
    root = ROOT

    def __init__(
        self,
        rundir: Path,
        broker_port: int,
        line: Line,
        max_bytes: int = 512 << 20,
        gather_ms: float | None = None,
    ) -> None:
        super().__init__(rundir, broker_port, line)
        self.max_bytes, self.gather_ms = max_bytes, gather_ms
        self.cwd = self.root
        # Its own control socket: the default (/run/edge-agent/control.sock) is one per machine,
        # and another edge-agent running there (a test, a service) makes the start fail.
        # A short temporary directory: AF_UNIX paths are limited to 107 bytes.
        self.control_dir = Path(tempfile.mkdtemp(prefix="bench-ctl-"))
        self.config = rundir / "agent.toml"
        self._write_config()

    def _write_config(self) -> None:
        lines = [
            "[node]",
            f'site = "{SITE}"',
            f'line = "{LINE}"',
            f'agent_id = "{self.AGENT_ID}"',
            "[mqtt]",
            f'brokers = [{{ host = "127.0.0.1", port = {self.broker_port} }}]',
            "reconnect_max_s = 1",
            "[queue]",
            f'path = "{self.db_path()}"',
            f"max_bytes = {self.max_bytes}",
            *([f"gather_ms = {self.gather_ms}"] if self.gather_ms is not None else []),
            "[control]",
            f'socket = "{self.control_dir / "control.sock"}"',
            "[log]",
            'format = "json"',
            'level = "info"',
        ]
        for dev, table in self.line.device_tables().items():
            lines.append(f"[devices.{dev}]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in table.items()]
        self.config.write_text("\n".join(lines) + "\n")

    def command(self) -> list[str]:
        """argv."""
        return [sys.executable, "-m", "edge_agent", "run", "-c", str(self.config)]

    def db_path(self) -> Path:
        """Queue file."""
        return self.rundir / "queue.db"

    def close(self) -> None:
        """As for every agent, and remove the control socket's directory."""
        super().close()
        shutil.rmtree(self.control_dir, ignore_errors=True)

    def counts(self) -> tuple[int, int]:
        """``accepted`` and ``sent`` counters, committed by the writer with each batch."""
        rows = dict(self._reader().execute("SELECT name, value FROM counters").fetchall())
        return int(rows.get("accepted", 0)), int(rows.get("sent", 0))

    def stop_report(self) -> dict[str, Any]:
        """What the log says about the stop: clean, seconds, unacked/uncommitted left."""
        events = self.events()
        names = [e.get("event") for e in events]
        stopped = next((e for e in events if e.get("event") == "stopped"), {})
        return {
            "clean_stop": "stopped" in names,
            "agent_reported_stop_s": stopped.get("seconds"),
            "unacked_at_stop": next(
                (e.get("messages") for e in events if e.get("event") == "mqtt_stop_unacked"), 0
            ),
            "uncommitted_at_stop": "queue_stop_uncommitted" in names,
            "errors": dict(Counter(e.get("event") for e in events if e.get("level") == "error")),
        }


class NaiveAgent(AgentProc):
    """``python -m bench.naive agent``: persist-queue + paho, one reading at a time."""

    name = "baseline"

    def command(self) -> list[str]:
        """argv."""
        cmd = [
            sys.executable,
            "-m",
            "bench.naive",
            "agent",
            "--queue",
            str(self.queue_dir),
            "--port",
            str(self.broker_port),
        ]
        for dev, port in zip(self.line.ids, self.line.ports, strict=True):
            cmd += ["--device", f"{dev}={port.link}"]
        return cmd

    @property
    def queue_dir(self) -> Path:
        """persist-queue's directory (it holds ``data.db``)."""
        return self.rundir / "pq"

    def db_path(self) -> Path:
        """Queue file."""
        return self.queue_dir / "data.db"

    def counts(self) -> tuple[int, int]:
        """Rows ever put, rows acked (status 5): a full scan, so only called at window ends."""
        rows = dict(
            self._reader()
            .execute("SELECT status, count(*) FROM ack_queue_default GROUP BY status")
            .fetchall()
        )
        return sum(rows.values()), int(rows.get(5, 0))

    def stop_report(self) -> dict[str, Any]:
        """Clean stop or not."""
        names = [e.get("event") for e in self.events()]
        return {"clean_stop": "stopped" in names}
