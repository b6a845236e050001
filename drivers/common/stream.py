"""The base of every byte-stream device: a :class:`Link`, a declared framer, a decode step.

A device on it is a config class (a :class:`~drivers.common.link.LinkConfig` subclass), a
framer (:meth:`StreamDriver.make_framer`) and a parse step (:meth:`~drivers.base.Driver.decode`).
What else a device needs is an optional hook:

* :meth:`~drivers.base.Driver._admit`: settle (scales) or drop duplicates (tunnel scanners);
* :meth:`StreamDriver._tick`: before each read (a poll, a software trigger), may write; with
  :meth:`StreamDriver._due` saying when it next has work, so the read wakes up in time;
* :meth:`StreamDriver._idle`: after a read that found the line silent (stall and heartbeat
  watchdogs: closing before would drop bytes not yet read); with
  :meth:`StreamDriver._watch_due` saying when a silence would become an error, so the read
  wakes up exactly then;
* :meth:`StreamDriver._on_open`: reset per-connection state.

The read loop: wait for bytes up to the next ``_due`` work, the inter-byte deadline of a frame
left open, or the next watchdog deadline, whichever comes first; feed the framer; on a silent
read let the framer expire an open frame (``partial``). When a ``listen://`` device's peer is
replaced, a frame the old peer left open is ``partial`` too, never glued to the new peer's bytes.

No polling at idle: the wait is one ``select`` on the port's fd and the device thread's
:class:`~drivers.common.wake.Waker` (:meth:`StreamDriver.set_waker`), so an idle device thread
sleeps until bytes arrive, one of those deadlines, or ``stop()``/``call()`` wakes it (``read()``
then returns None at once). Only a pyserial URL (``loop://``) without an fd waits in slices of
``URL_POLL_S``.
"""

from __future__ import annotations

import abc
import math
import time
from collections.abc import Sequence
from typing import ClassVar, TypeVar

from drivers.base import Driver
from drivers.common.framing import Event, Framer, Reject
from drivers.common.link import Link, LinkConfig
from drivers.common.wake import Waker
from edge_agent import logs
from edge_agent.errors import FrameError
from edge_agent.reading import Decoded

LC = TypeVar("LC", bound=LinkConfig)
#: Seconds past a frame's inter-byte deadline (or a watchdog's) the read waits, so the silent
#: read that ends it is past the deadline.
EXPIRY_SLACK_S = 0.005


class StreamDriver(Driver[LC]):
    """A framed byte-stream device on a :class:`Link`.

    Args:
        device_id: the config id (``[devices.<id>]``).
        cfg: the driver's validated config.
    """

    #: Keep bytes that arrived before a (re)open: results, for a scanner or a streaming scale.
    KEEP_INPUT: ClassVar[bool] = True

    def __init__(self, device_id: str, cfg: LC) -> None:
        super().__init__(device_id, cfg)
        self._link = Link(cfg, keep_input=self.KEEP_INPUT, device=device_id)
        self._framer = self.make_framer()
        self._generation = 0
        #: Monotonic time bytes last arrived (or the port was opened).
        self.last_rx = time.monotonic()
        #: Ends a wait early (the device thread's stop() and call()); None: not woken.
        self._waker: Waker | None = None

    @abc.abstractmethod
    def make_framer(self) -> Framer:
        """A fresh framer for this device's frames."""

    @property
    def refused(self) -> int:
        """Foreign peers refused on a ``listen://`` port."""
        return self._link.refused

    def open(self) -> None:
        """Open the port. Raises DeviceNotFoundError (absent) or DeviceInitError."""
        self.close()
        self._link.open()
        self._framer = self.make_framer()
        self._generation = self._link.generation
        self.last_rx = time.monotonic()
        self._on_open()
        self.log.info("port_opened", port=self.cfg.port)

    def close(self) -> None:
        """Close the port (idempotent). A frame cut by the close is dropped with the framer."""
        self._pending.clear()
        self._link.close()

    def retire(self) -> None:
        """Close, and release a ``listen://`` port (a reload removed or changed the device)."""
        self._pending.clear()
        self._link.retire()

    def set_waker(self, waker: Waker | None) -> None:
        """Let ``waker`` end a read early: ``read()`` returns None once it is set (None: none)."""
        self._waker = waker

    def read(self, timeout: float = 0.5) -> Decoded | None:
        """The next reading, or None after ``timeout`` s or as soon as the waker is set."""
        deadline = time.monotonic() + timeout
        waker = self._waker
        while not self._pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (waker is not None and waker.is_set()):
                return None
            self._take_all(self._read_events(remaining))
        return self._pending.popleft()

    def write(self, data: bytes) -> None:
        """Send a command to the device. Raises DeviceIOError."""
        self._link.write(data)

    def _on_open(self) -> None:
        """Reset per-connection state; called after every open."""

    def _tick(self, now: float) -> None:
        """Work before each read (polls, triggers). Raises DeviceIOError."""
        del now

    def _due(self, now: float) -> float:
        """Seconds until ``_tick`` has work (a poll, a trigger, a reply deadline); inf: none."""
        del now
        return math.inf

    def _idle(self, now: float) -> None:
        """Called after a read that returned nothing (watchdogs). Raises DeviceIOError."""
        del now

    def _watch_due(self, now: float) -> float:
        """Seconds until a silence would make ``_idle`` raise (stall, heartbeat); inf: never."""
        del now
        return math.inf

    def _read_events(self, timeout: float) -> Sequence[Event | Decoded]:
        now = time.monotonic()
        self._tick(now)
        expiry = self._framer.expires_at() + EXPIRY_SLACK_S - now  # wake to cut a partial frame
        watch = self._watch_due(now) + EXPIRY_SLACK_S  # wake when a silence becomes an error
        wait = max(0.0, min(timeout, self._due(now), expiry, watch))
        data = self._link.read(wait, self._waker.fileno() if self._waker is not None else -1)
        now = time.monotonic()
        events: list[Event | Decoded] = []
        if data:
            self.last_rx = now
            if logs.LEVEL.debug:
                self.log.debug("rx", data_hex=data.hex(" "))
            events += self._framer.feed(data, now)
        else:
            self._idle(now)
            events += self._framer.expire(now)
        if self._link.generation != self._generation:  # a new peer: the old one's frame is cut
            self._generation = self._link.generation
            events += self._framer.expire(math.inf)
        return events

    def replay(self, data: bytes, *, bytewise: bool = False) -> list[Decoded | Reject]:
        """Run recorded bytes through framer, decode and ``_admit``, without a port (unscreened).

        For captures and a technician's ``spy://`` traces. Rejects come back as :class:`Reject`
        (and are counted as on a live port); answers and heartbeats update their counters.
        """
        framer, out = self.make_framer(), list[Decoded | Reject]()
        chunks = [data[i : i + 1] for i in range(len(data))] if bytewise else [data]
        events: list[Event] = []
        for chunk in chunks:
            events += framer.feed(chunk, 0.0)
        events += framer.expire(1e9)
        for ev in events:
            if isinstance(ev, Reject):
                self._reject(ev.reason, ev.data)
                out.append(ev)
                continue
            try:
                out.extend(self._admit(ev, self.decode(ev)))
            except FrameError as err:
                self._reject(err.reason, ev, err.detail)
                out.append(Reject(err.reason, ev))
        return out
