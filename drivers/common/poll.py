"""The request/reply poll scheduler of the polled scale drivers (MT-SICS, SMA poll mode).

One poll is in flight at a time. A reply not seen within ``reply_timeout_ms`` is a ``no_reply``
reject; ``max_missed`` of them in a row mean the link is gone (DeviceIOError, so the supervisor
reopens the port). The next poll goes out ``poll_interval_ms`` after the previous one was sent.
The driver calls :meth:`Polling._poll_due` from its ``_tick`` (before each read) and clears
``_sent_at`` when a reply arrives.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from drivers.common.link import Link
from drivers.reasons import RejectReason as R
from edge_agent.errors import DeviceIOError


class _PollConfig(Protocol):
    @property
    def poll_interval_ms(self) -> int: ...
    @property
    def reply_timeout_ms(self) -> int: ...
    @property
    def max_missed(self) -> int: ...


class Polling:
    """Mixin for a scale driver polled over a :class:`Link` (listed before the driver base).

    The driver sets ``polls`` to 0 and calls :meth:`_reset_poll` from its constructor and on open.
    """

    _link: Link
    polls: int
    _sent_at: float | None
    _next_poll: float
    _missed: int

    def _reset_poll(self) -> None:
        self._sent_at, self._next_poll, self._missed = None, 0.0, 0

    def _poll_due(self, now: float, cfg: _PollConfig, wire: bytes, shown: bytes) -> None:
        """Count a missed reply, or send ``wire`` if a poll is due (``shown``: the reject's frame).

        Raises:
            DeviceIOError: ``max_missed`` replies missed in a row, or the write failed.
        """
        if self._sent_at is not None and now - self._sent_at > cfg.reply_timeout_ms / 1000:
            self._sent_at, self._missed = None, self._missed + 1
            self._reject(R.NO_REPLY, shown, f"{self._missed} in a row")
            if self._missed >= cfg.max_missed:
                raise self._lost("no reply to", self._missed, "polls")
        if self._sent_at is None and now >= self._next_poll:
            self._link.write(wire)
            self._sent_at, self._next_poll = now, now + cfg.poll_interval_ms / 1000
            self.polls += 1

    def _poll_wait(self, now: float, cfg: _PollConfig) -> float:
        """Seconds until the reply deadline of the poll in flight, or until the next poll."""
        if self._sent_at is not None:
            return self._sent_at + cfg.reply_timeout_ms / 1000 - now
        return self._next_poll - now

    if TYPE_CHECKING:  # Driver's, after this mixin in the MRO

        def _reject(self, reason: str, data: bytes, detail: str = "") -> None: ...

    def _lost(self, *what: object) -> DeviceIOError:
        return self._link.lost(*what)
