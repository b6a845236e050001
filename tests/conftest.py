"""Fixtures with real parts: a private Mosquitto per test, a backend subscriber, ptys, the agent."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from simulators.mosquitto import Mosquitto
from simulators.pty_port import PtyPort
from simulators.serial_line_scanner import ScannerSim, ScannerSimConfig
from tests.harness import Agent, Subscriber


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """Mosquitto on a free loopback port with eager persistence (killable, restartable)."""
    b = Mosquitto(tmp_path / "broker")
    b.start()
    yield b
    b.stop()


@pytest.fixture
def backend(broker: Mosquitto) -> Iterator[Subscriber]:
    """A subscriber recording everything under edge/#."""
    sub = Subscriber(broker.port)
    assert sub.wait_for(sub.client.is_connected, 5)
    yield sub
    sub.close()


@pytest.fixture
def scanner(tmp_path: Path) -> Iterator[Callable[..., ScannerSim]]:
    """Factory: a simulated scanner on a real pty behind a stable symlink."""
    sims: list[ScannerSim] = []

    def make(name: str = "scan1", **cfg: Any) -> ScannerSim:
        port = PtyPort(tmp_path / name)
        port.plug()
        sim = ScannerSim(port, ScannerSimConfig(**cfg))
        sims.append(sim)
        return sim

    yield make
    for s in sims:
        s.stop()
        s.port.close()


@pytest.fixture
def agent_factory(tmp_path: Path) -> Iterator[Callable[[Path], Agent]]:
    """Factory: the agent as a subprocess (stopped at teardown)."""
    agents: list[Agent] = []

    def make(config: Path, env: dict[str, str] | None = None) -> Agent:
        a = Agent(config, tmp_path, env)
        agents.append(a)
        return a

    yield make
    for a in agents:
        a.stop()
    for a in agents:
        if a.starts and '"json"' in a.config.read_text():
            a.json_events()  # every stderr line of every start is one JSON object (journald)
