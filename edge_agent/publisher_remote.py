"""The publisher's seams for remote operations (issue 14), mixed into :class:`Publisher`.

Everything here runs in the publisher's thread except the three posting methods
(:meth:`RemoteSeams.respond`, :meth:`RemoteSeams.resend`, :meth:`RemoteSeams.pause_commands`),
which the command threads call: they post to an inbox and wake the loop, which takes the
posts in :meth:`RemoteSeams._take_remote`. A request on ``{base}/cmd/#`` arrives in paho's
``on_message`` (in the publisher's thread since paho runs in it) and is only handed to the
command thread (``on_command``: it enqueues, drops and counts; it never answers inline).

* after each CONNACK (:meth:`RemoteSeams._remote_up`): the window follows the broker's
  Receive Maximum, the subscription to ``{base}/cmd/#`` (unless a flood paused it);
* before each connection attempt: the will, ``status.v1`` ``offline`` (``birth``);
* responses at QoS 1, Correlation Data echoed as an MQTT 5 property;
* a flood unsubscribes for a while; the loop's deadline list resubscribes on time.
"""

from __future__ import annotations

import queue
import socket
import time
from abc import abstractmethod
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge_agent.broker_link import Link
from edge_agent.lanes import Done, Window
from edge_agent.outbox import PendingRow
from edge_agent.topics import Topics

log = structlog.get_logger(__name__)

#: ``(topic, payload, response topic, correlation data)`` of a request, in the publisher's
#: thread: it must only enqueue.
OnCommand = Callable[[str, bytes, str | None, bytes | None], None]
#: Messages of the window kept free below the broker's Receive Maximum (status, alarms,
#: responses also need a slot).
RECEIVE_MAX_SPARE = 4


@dataclass(frozen=True, slots=True)
class _Respond:
    topic: str
    payload: bytes
    correlation: bytes | None


@dataclass(frozen=True, slots=True)
class _Resend:
    rows: list[PendingRow]
    done: Done


@dataclass(frozen=True, slots=True)
class _Pause:
    seconds: float


class RemoteSeams(Link):
    """Remote-operation seams of the publisher (see the module doc)."""

    topics: Topics
    window: Window
    _dirty: bool
    _paho_mids: dict[int, str]
    rejects: Counter[str]

    def _init_remote(self) -> None:
        #: The command thread's entry (None: no ``cmd/#`` subscription).
        self.on_command: OnCommand | None = None
        #: ``state -> status.v1 payload`` for the retained status topic (None: plain words).
        self.birth: Callable[[str], bytes] | None = None
        self._remote_inbox: queue.SimpleQueue[_Respond | _Resend | _Pause] = queue.SimpleQueue()
        #: Commands paused (a flood) until this monotonic time; 0: subscribed when connected.
        self._commands_paused_until = 0.0
        self.client.on_message = self._paho_message

    @property
    def cmd_topic(self) -> str:
        """The command subscription."""
        return f"{self.topics.base}/cmd/#"

    # ---- called from the command threads ---------------------------------------------------
    @abstractmethod
    def _signal(self) -> None:
        """Wake the publisher's loop (the publisher's)."""

    def respond(self, topic: str, payload: bytes, correlation: bytes | None) -> None:
        """Publish a command response (dropped if disconnected: the backend asks again)."""
        self._remote_inbox.put(_Respond(topic, payload, correlation))
        self._signal()

    def resend(self, rows: list[PendingRow], done: Done) -> None:
        """Queue ``rows`` (already sent once) on the resend lane; ``done(ok)`` once they are
        PUBACKed (ok) or given up on."""
        self._remote_inbox.put(_Resend(rows, done))
        self._signal()

    def pause_commands(self, seconds: float) -> None:
        """A command flood: unsubscribe from ``{base}/cmd/#`` for ``seconds``."""
        self._remote_inbox.put(_Pause(seconds))
        self._signal()

    # ---- the publisher's thread ------------------------------------------------------------
    def status_payload(self, state: str) -> bytes:
        """The retained status payload for ``online``, ``offline`` or ``offline-clean``."""
        return state.encode() if self.birth is None else self.birth(state)

    def _attempt(self) -> None:
        # the will carries the state of now (status.v1), set before every connection attempt
        self.client.will_set(self.topics.status, self.status_payload("offline"), 1, retain=True)
        super()._attempt()

    def _paho_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if self.on_command is None:
            return
        props = getattr(msg, "properties", None)
        response_topic = getattr(props, "ResponseTopic", None)
        correlation = getattr(props, "CorrelationData", None)
        self.on_command(msg.topic, bytes(msg.payload), response_topic, correlation)

    def _remote_up(self) -> None:
        """After a CONNACK: the window within Receive Maximum; subscribe to commands."""
        rmax = self.broker_receive_max
        size = self.cfg.inflight
        self.window.size = size if rmax is None else max(1, min(size, rmax - RECEIVE_MAX_SPARE))
        if self.on_command is not None and not self._commands_paused_until:
            self.client.subscribe(self.cmd_topic, qos=1)
        elif self.on_command is not None:  # paused while disconnected: a kept session (clean
            self.client.unsubscribe(self.cmd_topic)  # start off) still holds the subscription

    def _remote_due(self) -> list[float]:
        """The loop's deadline for resuming paused commands."""
        return [self._commands_paused_until] if self._commands_paused_until else []

    def _take_remote(self) -> None:
        """Take the command threads' posts; resume commands when a pause is over."""
        while True:
            try:
                post = self._remote_inbox.get_nowait()
            except queue.Empty:
                break
            match post:
                case _Respond(topic, payload, correlation):
                    self._respond(topic, payload, correlation)
                case _Resend(rows, done):
                    self.window.resend(rows, done)
                    self._dirty = True
                case _Pause(seconds):
                    self._commands_paused_until = time.monotonic() + seconds
                    if self.connected:
                        self.client.unsubscribe(self.cmd_topic)
        until = self._commands_paused_until
        if until and time.monotonic() >= until:
            self._commands_paused_until = 0.0
            if self.on_command is not None and self.connected:
                log.info("remote_commands_resumed")
                self.client.subscribe(self.cmd_topic, qos=1)

    def _side_rejected(self, topic: str, rc: ReasonCode) -> None:
        """The broker refused a status, alarm or response message (an ACL outside the agent's
        prefix: Mosquitto then closes the connection): said and counted, not alarmed (the alarm
        would be refused the same way, and the next connection publishes the birth again)."""
        self.rejects[str(rc)] += 1
        log.error("mqtt_publish_rejected", reason=str(rc), code=rc.value, topic=topic, rows=0)

    def _respond(self, topic: str, payload: bytes, correlation: bytes | None) -> None:
        if not self.connected:
            log.info("remote_response_dropped", topic=topic, reason="not connected")
            return
        props = None
        if correlation is not None and self.cfg.protocol == "5":
            props = Properties(PacketTypes.PUBLISH)
            props.CorrelationData = correlation
        self._publish(topic, payload, False, props)

    @abstractmethod
    def _turn(self, wait_s: float | None) -> None:
        """One turn of the publisher's loop."""

    def _go_offline(self) -> None:
        """Graceful stop: ``offline-clean`` (retained; not the will), then DISCONNECT."""
        try:
            if self.connected:
                info = self._publish(self.topics.status, self.status_payload("offline-clean"), True)
                deadline = time.monotonic() + 0.3
                while info.mid in self._paho_mids and self.connected:
                    if time.monotonic() >= deadline:
                        break
                    self._turn(0.05)
            self.leaving = True
            self.client.disconnect()
            self.client.loop_write()  # paho closes the socket once DISCONNECT is written
        except (RuntimeError, ValueError, OSError) as err:
            log.debug("mqtt_offline_failed", error=str(err))
        sock = self.client.socket()
        if isinstance(sock, socket.socket):
            sock.close()

    @abstractmethod
    def _publish(
        self, topic: str, payload: bytes, retain: bool, props: Properties | None = None
    ) -> Any:
        """Every QoS 1 publish (the publisher's)."""
