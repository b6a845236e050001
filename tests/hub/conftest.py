"""Fixtures of the hub's tests: a private PostgreSQL per test, hub instances as subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from simulators.postgres import Postgres, bindir
from tests.harness import wait_log_event

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def postgres(tmp_path: Path) -> Iterator[Postgres]:
    """PostgreSQL on a free loopback port in tmp_path (never the machine's own service)."""
    if bindir() is None:
        pytest.skip("PostgreSQL binaries not installed (apt-get install postgresql)")
    pg = Postgres(tmp_path / "pg")
    pg.start()
    yield pg
    pg.stop()


def hub_config(
    tmp: Path,
    name: str,
    broker_ports: list[int],
    dsn: str,
    extra: str = "",
    mqtt_extra: str = "",
    metrics: str = "",
) -> Path:
    """Write a hub.toml for instance ``name``; returns its path."""
    brokers = ", ".join(f'{{ host = "127.0.0.1", port = {p} }}' for p in broker_ports)
    text = f"""[hub]
instance = "{name}"
batch_wait_ms = 20
gap_scan_s = 0.3
{extra}
[mqtt]
brokers = [{brokers}]
{mqtt_extra}
[database]
dsn = "{dsn}"
[metrics]
{metrics}
[log]
format = "json"
level = "info"
"""
    path = tmp / f"hub-{name}.toml"
    path.write_text(text)
    return path


class HubProc:
    """``edge-agent hub run`` as a subprocess; stderr (JSON logs) in a file per start."""

    def __init__(self, config: Path, logdir: Path) -> None:
        self.config = config
        self.logdir = logdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def log_path(self) -> Path:
        return self.logdir / f"{self.config.stem}-{self.starts}.log"

    def start(self) -> None:
        """Start and wait for its subscriptions."""
        self.starts += 1
        with self.log_path().open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edge_agent", "hub", "run", "-c", str(self.config)],
                stderr=log,
                stdout=subprocess.DEVNULL,
                cwd=ROOT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        assert self.wait_log("hub_connected", 20), self.log_path().read_text()

    def events(self) -> list[dict[str, Any]]:
        out = []
        for i in range(1, self.starts + 1):
            p = self.logdir / f"{self.config.stem}-{i}.log"
            out += [json.loads(x) for x in p.read_text().splitlines() if x.startswith("{")]
        return out

    def wait_log(self, event: str, timeout: float) -> bool:
        return wait_log_event(self.proc, self.log_path(), event, timeout)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def hub_factory(tmp_path: Path) -> Iterator[Callable[[Path], HubProc]]:
    """Factory: hub instances as subprocesses (stopped at teardown)."""
    hubs: list[HubProc] = []

    def make(config: Path) -> HubProc:
        h = HubProc(config, tmp_path)
        hubs.append(h)
        return h

    yield make
    for h in hubs:
        h.stop()


def query(dsn: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    """Run one statement on a fresh connection; returns its rows."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description else []


def wait_until(pred: Callable[[], bool], timeout: float = 20.0, step: float = 0.1) -> bool:
    """Poll ``pred`` until true or ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()
