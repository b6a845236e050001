"""The device thread outlives a driver bug (it logs it, reopens the device and reads on) and a
bug behind its sink (logged and counted; it reads on)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from drivers.common.framing import Event
from drivers.virtual import VirtualConfig, VirtualDriver, send
from edge_agent.reading import Capture, Decoded
from edge_agent.supervisor import DeviceWorker


class BuggyDriver(VirtualDriver):
    """Raises a plain ValueError in ``_read_events`` (as a framer or transport bug would)."""

    def _read_events(self, timeout: float) -> Sequence[Event | Decoded]:
        events = super()._read_events(timeout)
        if events == [b"BOOM"]:
            msg = "bug in the framer"
            raise ValueError(msg)
        return events


def run(
    worker: DeviceWorker, channel: str, frames: Sequence[bytes], done: Callable[[], bool]
) -> bool:
    """Start ``worker``, send ``frames`` on the virtual ``channel``, wait (5 s at most) until
    ``done()``, stop it. Returns whether the thread was alive before the stop."""
    worker.start()
    try:
        for frame in frames:
            send(channel, frame)
        deadline = time.monotonic() + 5
        while not done() and time.monotonic() < deadline:
            time.sleep(0.02)
        return worker.is_alive()
    finally:
        worker.stop()
        worker.join(3)


def test_a_driver_bug_is_logged_and_the_device_reopened_not_silently_dead() -> None:
    cfg = VirtualConfig.model_validate({"type": "virtual", "channel": "buggy"})
    got: list[Capture] = []
    states: list[tuple[str, str]] = []
    worker = DeviceWorker(
        BuggyDriver("buggy_1", cfg), got.append, lambda _d, s, r: states.append((s, r))
    )
    run(worker, "buggy", (b"A1", b"BOOM", b"A2"), lambda: len(got) >= 2)
    assert [c.decoded.value for c in got] == ["A1", "A2"]
    assert worker.driver_errors == 1 and not worker.is_alive()
    assert ("reconnecting", "driver error: ValueError: bug in the framer") in states
    assert [s for s, _ in states].count("connected") == 2


def test_a_sink_that_raises_does_not_end_the_device_thread() -> None:
    cfg = VirtualConfig.model_validate({"type": "virtual", "channel": "sinkbug"})
    got: list[str] = []

    def sink(cap: Capture) -> None:
        if cap.decoded.value == "B2":
            msg = "bug behind the sink"
            raise RuntimeError(msg)
        got.append(str(cap.decoded.value))

    worker = DeviceWorker(VirtualDriver("sinkbug_1", cfg), sink, lambda _d, _s, _r: None)
    assert run(worker, "sinkbug", (b"B1", b"B2", b"B3"), lambda: len(got) >= 2)  # alive
    assert got == ["B1", "B3"]
    assert worker.sink_errors == 1 and worker.driver_errors == 0
