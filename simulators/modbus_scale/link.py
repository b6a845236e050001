"""Plumbing under the simulated indicator: an asyncio loop thread and a pty "null-modem cable".

pymodbus's serial server opens its port by path, and a pty master has none. So an RTU
simulator uses two ptys: the driver opens the *device* pty (behind the stable symlink, the
one that is unplugged and replugged); pymodbus's :class:`~pymodbus.server.ModbusSerialServer`
opens the *server* pty; :class:`PtyCable` copies bytes between the two masters.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from simulators.pty_port import PtyPort

T = TypeVar("T")


class LoopThread:
    """An asyncio event loop running in a daemon thread (the pymodbus server lives there).

    Args:
        name: thread name.
    """

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()
        tasks = asyncio.all_tasks(self.loop)
        for task in tasks:
            task.cancel()
        self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 5.0) -> T:
        """Run ``coro`` on the loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        """Stop the loop, cancel what is left, close it."""
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)


class PtyCable:
    """Copies bytes both ways between two ptys' masters, surviving unplug/replug of either.

    Args:
        device: the pty the driver opens (its symlink is the stable device name).
        server: the pty the pymodbus server opens.
    """

    #: Longest wait in select(), seconds: bounds how fast a replugged pty is picked up.
    TICK_S = 0.01

    def __init__(self, device: PtyPort, server: PtyPort) -> None:
        self.device, self.server = device, server
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="pty-cable", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            fds = [fd for fd in (self.device.master, self.server.master) if fd is not None]
            with contextlib.suppress(OSError, ValueError):  # an fd closed by unplug()
                select.select(fds, [], [], self.TICK_S)
            if not fds:
                self._stop.wait(self.TICK_S)
            self._copy(self.device, self.server)
            self._copy(self.server, self.device)

    @staticmethod
    def _copy(src: PtyPort, dst: PtyPort) -> None:
        data = src.read()
        while data:
            n = dst.write(data)
            if n <= 0:
                return  # unplugged: the bytes are lost, as on a pulled cable
            data = data[n:]

    def close(self) -> None:
        """Stop copying."""
        self._stop.set()
        self.thread.join(2)
