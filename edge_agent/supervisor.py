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
    #: Read timeout per call, seconds: bounds how fast stop() is noticed.
    READ_TIMEOUT_S = 0.25

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
        #: Failed opens and short connections without a reading, in a row (the backoff streak).
        self._streak = 0
        self._calls: queue.SimpleQueue[tuple[Callable[[], object], Future[object]]] = (
            queue.SimpleQueue()
        )

    def call(self, fn: Callable[[], object], timeout: float = 5.0) -> object:
        """Run ``fn`` in the device thread between reads (e.g. a scale's zero); return its result.

        Raises:
            TimeoutError: the device thread did not get to it in time (e.g. reconnecting).
        """
        fut: Future[object] = Future()
        self._calls.put((fn, fut))
        return fut.result(timeout)

    def _run_calls(self) -> None:
        while not self._calls.empty():
            fn, fut = self._calls.get_nowait()
            try:
                fut.set_result(fn())
            except Exception as err:
                fut.set_exception(err)

    def stop(self) -> None:
        """Ask the thread to finish its current read and close the device."""
        self._stop_evt.set()

    def run(self) -> None:
        """Open, read until the link breaks, reopen; until stopped."""
        while not self._stop_evt.is_set():
            if not self._open():
                break
            self._read_loop()
            self.driver.close()
        self.driver.close()
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
        while not self._stop_evt.is_set():
            self._run_calls()
            try:
                decoded = self.driver.read(self.READ_TIMEOUT_S)
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
                    self._sink(Capture.now(self.driver.device_id, decoded))
                continue
            self.reconnects += 1
            useful = self.readings > readings or time.monotonic() - opened >= self.STABLE_S
            self._streak = 0 if useful else self._streak + 1
            self._set_state("reconnecting", reason)
            return

    def _set_state(self, state: str, reason: str) -> None:
        if state == self.state and reason == self.reason:
            return
        self.state, self.reason = state, reason
        level = log.info if state in ("connected", "stopped") else log.warning
        level("device_state", device=self.driver.device_id, state=state, reason=reason)
        self._on_state(self.driver.device_id, state, reason)
