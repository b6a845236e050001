"""The driver contract, written once and run against every driver with its simulator.

python-can's back2back idea: a subclass provides a ``rig`` fixture returning a :class:`Rig`
(a driver built from config, plus hooks that make its simulator send a good frame, a garbled
frame, unplug and replug). The tests below then hold for every driver: open/read/close, the
read timeout, idempotent close, a garbled frame counted, unplug -> DeviceIOError -> reopen, 50
unplug/replug cycles without an fd or thread leak, and the registry entry. A subclass adds only
what is specific to its device.

A subclass may also set ``CAPTURES``: recorded (or hand-written, cited) byte streams with the
readings and rejects they must give, run whole and one byte at a time through the driver's own
framer and parser (:meth:`~drivers.common.stream.StreamDriver.replay`). Captures kept as files
live in ``tests/data/captures/<driver>/`` instead (tests/test_new_device_checklist.py accepts
either).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest

from drivers import config_class, driver_class
from drivers.base import Driver
from drivers.common.framing import Reject
from drivers.common.stream import StreamDriver
from edge_agent.errors import DeviceError, DeviceIOError
from edge_agent.reading import Decoded


@dataclass
class Rig:
    """A driver and the simulator hooks that drive it."""

    driver: Driver[Any]
    send_good: Callable[[], object]  # returns what ``expect`` must give for the reading(s)
    send_garbled: Callable[[], str]  # returns the expected reject reason
    unplug: Callable[[], None]
    replug: Callable[[], object]  # what it returns is not used
    #: fds / threads allowed above the baseline after 50 replugs (a library keeping one).
    fd_slack: int = 0
    thread_slack: int = 0
    #: After the 50 replugs: no reject at all (False where a cut frame is expected, scales).
    clean_replugs: bool = True
    #: Driver-specific checks after the 50 replugs (open counts, handles released).
    after_replugs: Callable[[], None] | None = None
    #: What of a reading ``send_good``'s return is compared with (value and gate counter...).
    expect: Callable[[Decoded], object] = lambda d: d.value
    #: Readings one ``send_good`` makes (a tunnel message with several codes): then it
    #: returns the list of what ``expect`` gives for each.
    per_good: int = 1

    def good(self, timeout: float = 3.0) -> None:
        """Make the simulator send good data and assert the driver reads what it sent."""
        want = self.send_good()
        got = []
        for _ in range(self.per_good):
            d = read_until(self.driver, timeout)
            assert d is not None, f"no reading; wanted {want!r}"
            got.append(self.expect(d))
        assert (got if self.per_good > 1 else got[0]) == want


@dataclass(frozen=True)
class Capture:
    """Bytes a device sent and what they must give: readings as ``{"value": ...}`` dicts (with
    any other :class:`Decoded` fields to check, e.g. ``symbology``), rejects as
    ``{"reject": reason}``."""

    name: str
    config: dict[str, Any]
    data: bytes
    expected: list[dict[str, Any]]


def reopen(driver: Driver[Any], timeout: float = 3.0) -> None:
    """Open ``driver``, retrying while the device is not back yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            driver.open()
            return
        except DeviceError:
            assert time.monotonic() < deadline, "device did not reopen after replug"
            time.sleep(0.02)


def counts() -> tuple[int, int]:
    """Open fds and live threads of this process."""
    return len(os.listdir("/proc/self/fd")), threading.active_count()


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

    #: Inline captures (see the module docstring); a byte-stream driver's are replayed.
    CAPTURES: ClassVar[tuple[Capture, ...]] = ()

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if not cls.CAPTURES:  # captures kept as files (tests/data/captures/<driver>/): the
            uncollected = DriverContract.test_inline_captures.__name__  # test is not collected,
            setattr(cls, uncollected, None)  # rather than skipped for every driver and variant

    def test_open_read_close(self, rig: Rig) -> None:
        rig.driver.open()
        rig.good()
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
        rig.good()
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
        reopen(rig.driver)
        rig.good()
        rig.driver.close()

    def test_unplug_replug_50_times_leaks_no_fd_or_thread(self, rig: Rig) -> None:
        drv = rig.driver
        fds = threads = 0
        for i in range(51):  # the first cycle warms up (lazy imports, a library's pools)
            if i == 1:
                fds, threads = counts()
            reopen(drv)
            rig.good()
            rig.unplug()
            with pytest.raises(DeviceIOError):
                for _ in range(50):
                    drv.read(0.1)
            drv.close()
            rig.replug()
        fds_now, threads_now = counts()
        assert fds_now <= fds + rig.fd_slack, f"{fds_now - fds} fds leaked over 50 replugs"
        assert threads_now <= threads + rig.thread_slack, f"{threads_now - threads} threads"
        if rig.clean_replugs:
            assert not drv.rejects, dict(drv.rejects)
        if rig.after_replugs is not None:
            rig.after_replugs()

    def test_registry_names_this_driver(self, rig: Rig) -> None:
        cls = type(rig.driver)
        kind = cls.kind
        assert driver_class(kind) is cls, kind
        assert config_class(kind) is type(rig.driver.cfg)
        assert rig.driver.cfg.type == kind

    @pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "byte-at-a-time"])
    def test_inline_captures(self, rig: Rig, bytewise: bool) -> None:
        kind = type(rig.driver).kind
        for cap in self.CAPTURES:
            cfg = config_class(kind).model_validate({"type": kind, "port": "loop://", **cap.config})
            drv = driver_class(kind)(f"capture-{cap.name}", cfg)
            assert isinstance(drv, StreamDriver), "inline captures replay a byte-stream driver"
            got = [view(x, cap.expected) for x in drv.replay(cap.data, bytewise=bytewise)]
            assert got == cap.expected, cap.name


def view(item: Decoded | Reject, expected: list[dict[str, Any]]) -> dict[str, Any]:
    """``item`` as a capture's expected dict, with the fields the capture names."""
    if isinstance(item, Reject):
        return {"reject": str(item.reason)}
    keys = {k for e in expected if "reject" not in e for k in e} or {"value"}
    return {k: getattr(item, k) for k in sorted(keys)}
