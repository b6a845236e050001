"""Device supervision: one thread per device opens it with backoff, reads, and hands captures on.

A device that is absent or unplugged is retried with exponential backoff (tenacity) capped at
``MAX_BACKOFF_S``, so a replugged scanner is read again within about half a second of its port
reappearing; a dead port never becomes a hot loop. Device state changes are reported to a
callback (the publisher's retained ``device/<id>/state`` topic).

The backoff streak survives a connection that broke before it delivered anything (a port that
opens but fails its first read would otherwise reopen at full speed, logging and publishing a
state change each time), and restarts from the shortest wait once a reading arrived or the link
stayed up ``STABLE_S``: a technician replugging a cable fifty times never waits longer than for
the first replug.

The thread sleeps while its device is idle: a byte-stream driver (``set_waker``) waits in one
``select`` on its port and the worker's :class:`~drivers.common.wake.Waker`, which ``stop()``
and ``call()`` set, so nothing wakes it but bytes, the driver's own deadlines (polls,
triggers, open frames, watchdogs) or those two; ``READ_TIMEOUT_S`` is only a safety cap. A
driver without one (USB HID, Modbus) is read in slices of ``SLICE_READ_S``, which bound how
fast ``stop()`` and ``call()`` are noticed there.
"""

from __future__ import annotations

import queue
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import structlog
from tenacity import Retrying, retry_if_exception_type

from drivers.base import Driver
from drivers.common.wake import Waker
from edge_agent.errors import DeviceError
from edge_agent.reading import Capture

log = structlog.get_logger(__name__)

Sink = Callable[[Capture], object]
StateCallback = Callable[[str, str, str], None]


class DeviceWorker(threading.Thread):
    """Reads one driver until stopped.

    Args:
        driver: built from config, not yet opened.
        sink: receives every decoded capture (the writer's ``submit``).
        on_state: ``(device_id, state, reason)`` on every change: connected / reconnecting.
    """

    #: Longest wait between reopen attempts, seconds.
    MAX_BACKOFF_S = 0.5
    #: First wait between reopen attempts, seconds (doubling up to MAX_BACKOFF_S).
    MIN_BACKOFF_S = 0.05
    #: A link up this long (or one that delivered a reading) resets the backoff streak, seconds.
    STABLE_S = 5.0
    #: Read timeout per call of a driver the worker can wake, seconds. Not a polling interval:
    #: such a read returns for bytes, the driver's deadlines, stop() and call(). A cap, so a
    #: deadline a driver failed to declare is late by at most this; 30 s costs 8 idle devices
    #: 0.27 wake-ups/s of the process's budget of 5 (issue 13).
    READ_TIMEOUT_S = 30.0
    #: Read timeout per call of a driver without a waker (HID, Modbus), seconds: bounds how fast
    #: stop() and call() are noticed there. The HID default ``read_timeout_ms`` (200), so an
    #: idle HID scanner makes one libusb read per slice, not one and a remainder.
    SLICE_READ_S = 0.2

    def __init__(self, driver: Driver[Any], sink: Sink, on_state: StateCallback) -> None:
        super().__init__(name=f"device-{driver.device_id}", daemon=True)
        self.driver = driver
        self._sink = sink
        self._on_state = on_state
        self._stop_evt = threading.Event()
        self.state = "starting"
        self.reason = ""
        self.readings = 0
        self.last_reading_mono: float | None = None
        #: The last reading's value as a technician reads it: ``12.345 kg``, a code as is.
        self.last_value: str | None = None
        self.reconnects = 0
        #: Unexpected exceptions out of the driver (bugs): logged, then the device is reopened.
        self.driver_errors = 0
        #: Captures the sink raised on (a bug behind it: logged, the thread reads on).
        self.sink_errors = 0
        #: Failed opens and short connections without a reading, in a row (the backoff streak).
        self._streak = 0
        self._calls: queue.SimpleQueue[tuple[Callable[[], object], Future[object]]] = (
            queue.SimpleQueue()
        )
        #: Created and closed by the thread itself (run()), so a worker never started holds no fd.
        self._waker: Waker | None = None

    def call(self, fn: Callable[[], object], timeout: float = 5.0) -> object:
        """Run ``fn`` in the device thread between reads (e.g. a scale's zero); return its result.

        Raises:
            TimeoutError: the device thread did not get to it in time (e.g. reconnecting).
        """
        fut: Future[object] = Future()
        self._calls.put((fn, fut))
        self._wake()
        return fut.result(timeout)

    def _wake(self) -> None:
        waker = self._waker
        if waker is not None:
            waker.wake()

    def _run_calls(self) -> None:
        while not self._calls.empty():
            fn, fut = self._calls.get_nowait()
            try:
                fut.set_result(fn())
            except Exception as err:
                fut.set_exception(err)

    def stop(self) -> None:
        """Ask the thread to end its current read at once and close the device."""
        self._stop_evt.set()
        self._wake()

    def run(self) -> None:
        """Open, read until the link breaks, reopen; until stopped."""
        set_waker = getattr(self.driver, "set_waker", None)
        if set_waker is not None:
            self._waker = Waker()
            set_waker(self._waker)
        try:
            while not self._stop_evt.is_set():
                if not self._open():
                    break
                self._read_loop()
                self.driver.close()
            self.driver.close()
        finally:
            waker, self._waker = self._waker, None
            if set_waker is not None:
                set_waker(None)  # the driver keeps no closed waker
            if waker is not None:
                waker.close()
        self._set_state("stopped", "")

    def _open(self) -> bool:
        """Open with backoff; the streak of the previous, barren connection carries on."""
        if self._streak:
            self._sleep(self._backoff(self._streak))
            if self._stop_evt.is_set():
                return False
        retrying = Retrying(
            retry=retry_if_exception_type(DeviceError),
            wait=lambda state: self._backoff(self._streak + state.attempt_number),
            stop=lambda _state: self._stop_evt.is_set(),
            sleep=self._sleep,
            before_sleep=self._log_retry,
            reraise=True,
        )
        try:
            retrying(self.driver.open)
        except DeviceError:
            return False  # stopped while retrying
        self._streak += retrying.statistics.get("attempt_number", 1) - 1
        self._set_state("connected", "")
        return not self._stop_evt.is_set()

    def _backoff(self, streak: int) -> float:
        """Seconds to wait after ``streak`` failures in a row: doubling, capped, jittered."""
        base = min(self.MAX_BACKOFF_S, self.MIN_BACKOFF_S * 2.0 ** min(max(streak - 1, 0), 16))
        return base + random.uniform(0, self.MIN_BACKOFF_S)

    def _sleep(self, seconds: float) -> None:
        self._stop_evt.wait(seconds)  # a stop() interrupts the backoff

    def _log_retry(self, state: object) -> None:
        outcome = getattr(state, "outcome", None)
        err = outcome.exception() if outcome is not None else None
        if self.state != "reconnecting":
            self._set_state("reconnecting", str(err))

    def _read_loop(self) -> None:
        opened, readings = time.monotonic(), self.readings
        waker = self._waker
        timeout = self.READ_TIMEOUT_S if waker is not None else self.SLICE_READ_S
        while True:
            if waker is not None:
                waker.clear()  # before looking: a later stop() or call() wakes the next read
            if self._stop_evt.is_set():
                return
            self._run_calls()
            try:
                decoded = self.driver.read(timeout)
            except DeviceError as err:
                reason = str(err)
            except Exception as err:  # a driver bug must not silently end this device's thread
                log.exception("driver_error", device=self.driver.device_id, error=repr(err))
                self.driver_errors += 1
                reason = f"driver error: {type(err).__name__}: {err}"
            else:
                if decoded is not None:
                    self.readings += 1
                    self.last_reading_mono = time.monotonic()
                    unit = f" {decoded.unit}" if decoded.unit else ""
                    self.last_value = f"{decoded.value}{unit}"
                    self._deliver(Capture.now(self.driver.device_id, decoded))
                continue
            self.reconnects += 1
            useful = self.readings > readings or time.monotonic() - opened >= self.STABLE_S
            self._streak = 0 if useful else self._streak + 1
            self._set_state("reconnecting", reason)
            return

    def _deliver(self, capture: Capture) -> None:
        """Hand a capture on; a bug behind the sink is logged and counted, and the thread reads
        on (an exception here used to end the device's thread, leaving the port unread)."""
        try:
            self._sink(capture)
        except Exception as err:
            log.exception("sink_error", device=capture.device, error=repr(err))
            self.sink_errors += 1

    def _set_state(self, state: str, reason: str) -> None:
        if state == self.state and reason == self.reason:
            return
        self.state, self.reason = state, reason
        level = log.info if state in ("connected", "stopped") else log.warning
        level("device_state", device=self.driver.device_id, state=state, reason=reason)
        self._on_state(self.driver.device_id, state, reason)
