"""The driver contract, written once and run against every driver with its simulator.

python-can's back2back idea: a subclass provides a ``rig`` fixture returning a :class:`Rig`
(a driver built from config, plus hooks that make its simulator send a good frame, a garbled
frame, unplug and replug). The tests below then hold for every driver.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from drivers.base import Driver
from edge_agent.errors import DeviceError, DeviceIOError
from edge_agent.reading import Decoded


@dataclass
class Rig:
    """A driver and the simulator hooks that drive it."""

    driver: Driver[Any]
    send_good: Callable[[], object]  # returns the expected value
    send_garbled: Callable[[], str]  # returns the expected reject reason
    unplug: Callable[[], None]
    replug: Callable[[], object]  # what it returns is not used


def read_until(driver: Driver[Any], timeout: float = 3.0) -> Decoded | None:
    """Read until a reading arrives or ``timeout`` s pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        d = driver.read(0.2)
        if d is not None:
            return d
    return None


class DriverContract:
    """Subclass with a ``rig`` fixture; every test here must pass for every driver."""

    def test_open_read_close(self, rig: Rig) -> None:
        rig.driver.open()
        expected = rig.send_good()
        d = read_until(rig.driver)
        assert d is not None and d.value == expected
        rig.driver.close()

    def test_timeout_returns_none(self, rig: Rig) -> None:
        rig.driver.open()
        t0 = time.monotonic()
        assert rig.driver.read(0.3) is None
        assert 0.25 <= time.monotonic() - t0 < 1.5
        rig.driver.close()

    def test_close_is_idempotent(self, rig: Rig) -> None:
        rig.driver.open()
        rig.driver.close()
        rig.driver.close()

    def test_garbled_frame_is_counted_not_raised(self, rig: Rig) -> None:
        rig.driver.open()
        reason = rig.send_garbled()
        expected = rig.send_good()
        d = read_until(rig.driver)
        assert d is not None and d.value == expected
        assert rig.driver.rejects[reason] == 1, dict(rig.driver.rejects)
        rig.driver.close()

    def test_unplug_raises_io_error_then_reconnects(self, rig: Rig) -> None:
        rig.driver.open()
        rig.unplug()
        with pytest.raises(DeviceIOError):
            for _ in range(50):
                rig.driver.read(0.1)
        rig.driver.close()
        rig.replug()
        deadline = time.monotonic() + 3
        while True:
            try:
                rig.driver.open()
                break
            except DeviceError:
                assert time.monotonic() < deadline, "device did not reopen after replug"
                time.sleep(0.05)
        expected = rig.send_good()
        d = read_until(rig.driver)
        assert d is not None and d.value == expected
        rig.driver.close()
