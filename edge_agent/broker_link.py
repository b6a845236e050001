"""The publisher's connection to the broker: connect, CONNACK, disconnect, takeover, failover.

A broker that cannot be reached says why: the TLS error (``certificate verify failed: ...``,
an alert the broker sent such as ``certificate expired``), the refused CONNACK (``0x86 Bad user
name or password``) or the socket error goes into the ``mqtt_connect_failed`` log line, into
``last_error`` (STATUS=, ``edge-agent status``) and into a ``mqtt_connect_failed`` alarm kept in
RAM and published once connected (one per outage and reason). Attempts back off from 0.5 s
doubling to ``reconnect_max_s`` (paho's documented rule, applied by :class:`Link` because the
publisher drives paho from its own loop); readings keep being committed meanwhile.

Every method runs in the publisher's thread (:mod:`edge_agent.publisher`), the only thread
that touches the paho client; only :meth:`Link.status` is read from other threads.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.reasoncodes import ReasonCode

from edge_agent.config import MqttConfig
from edge_agent.mqtt_client import (
    SHORT_LIVED_N,
    _Client,
    connect_error,
    next_retry_in,
    reason_words,
)
from edge_agent.mqtt_loop import NetLoop

log = structlog.get_logger(__name__)


class Link:
    """Connection state and its handlers, mixed into the publisher thread.

    Args:
        cfg: the ``[mqtt]`` section.
        client: the paho client (driven by the publisher's loop).
        client_id: our client id (named in takeover messages).
    """

    def __init__(self, cfg: MqttConfig, client: _Client, client_id: str) -> None:
        self.cfg = cfg
        self.client = client
        self.client_id = client_id
        self._broker = 0
        self._fails = 0
        #: Failed connection attempts since the last successful CONNACK.
        self.connect_failures = 0
        self._alarmed_reason: str | None = None
        self._connack_refused = False
        #: We are disconnecting on purpose (a graceful stop): the DISCONNECT is not a failure.
        self.leaving = False
        self.connected = False
        #: Why the broker is not connected (shown in STATUS=), None while connected.
        self.last_error: str | None = None
        self.last_puback_mono: float | None = None
        self.acked_rows = 0
        self.reconnects = 0
        #: Times the broker gave our session to another client with our id (MQTT 5 0x8E).
        self.takeovers = 0
        self.broker_receive_max: int | None = None
        self.broker_max_packet: int | None = None
        #: Called when ``connected`` or ``last_error`` changes (the daemon's STATUS=).
        self.on_change: Callable[[], None] = lambda: None

    net: NetLoop

    @abstractmethod
    def alarm(self, name: str, details: dict[str, object]) -> None:
        """Publish an alarm (the publisher's)."""

    @abstractmethod
    def _on_up(self) -> None:
        """The connection is up (CONNACK success): resume sending (the publisher's)."""

    @abstractmethod
    def _counts(self) -> dict[str, object]:
        """The publisher's own counters for :meth:`status`."""

    def _aim(self) -> None:
        """Point the client at the current broker (the next attempt connects there)."""
        b = self.cfg.brokers[self._broker]
        log.info("mqtt_connecting", host=b.host, port=b.port, protocol=self.cfg.protocol)
        self.client.connect_async(b.host, b.port, keepalive=self.cfg.keepalive)

    def _attempt(self) -> None:
        """One connection attempt (TCP, TLS handshake, CONNECT), blocking up to paho's
        ``connect_timeout``; a failure is reported and the next attempt scheduled."""
        try:
            self.net.attempt()
        except OSError:  # socket errors, TLS errors, timeouts (reconnect() kept the reason)
            self.client.note_failure()
            self._connack_refused = False
            self._on_connect_failed(connect_error(self.client) or "tcp/tls connect failed")

    # ---- paho callbacks (they run in our loop, inside loop_read/loop_write/loop_misc) ----
    def _paho_connect(self, _c: Any, _u: Any, _f: Any, rc: ReasonCode, _p: Any = None) -> None:
        if rc.is_failure:
            self._connack_refused = True  # the broker closes next: one failure, not two
            self._on_connect_failed(f"CONNACK {rc.value:#04x} {rc}")
            return
        self.client.note_connected()
        # the broker's MQTT 5 limits (CONNACK properties; None: not given, or MQTT 3.1.1)
        self.broker_receive_max = getattr(_p, "ReceiveMaximum", None)
        self.broker_max_packet = getattr(_p, "MaximumPacketSize", None)
        b = self.cfg.brokers[self._broker]
        log.info("mqtt_connected", host=b.host, port=b.port, after_failures=self.connect_failures)
        self.connected = True
        self.last_error = None
        self._fails = 0
        self.connect_failures = 0
        self._alarmed_reason = None
        self.on_change()
        self._on_up()

    def _paho_disconnect(self, c: Any, _u: Any, flags: Any, rc: ReasonCode, _p: Any = None) -> None:
        from_server = bool(getattr(flags, "is_disconnect_packet_from_server", False))
        if self.leaving and not from_server:
            log.info("mqtt_offline", reason=str(rc))  # our own DISCONNECT on a graceful stop
            self.connected = False
            return
        takeover = self.client.takeover(rc, from_server)
        self.client.note_failure()  # after a takeover's back-off changed the delays
        error = connect_error(c)
        if not self.connected:
            if self._connack_refused:
                self._connack_refused = False  # already reported with the CONNACK's reason
            else:  # closed before CONNACK: a TLS alert from the broker, a reset
                self._on_connect_failed(error or f"closed before CONNACK: {rc}")
            return
        self.reconnects += 1
        why = f"disconnected: {rc}" + (f" ({error})" if error else "")
        if takeover is not None:
            why = self._on_takeover(*takeover)
        log.warning("mqtt_disconnected", reason=why)
        self.connected = False
        self.last_error = why
        self.on_change()
        self._count_failure()

    def _on_takeover(self, certainty: str, retry_in_s: float) -> str:
        """The broker gave our session to another client with our id (a copied config on a
        second PC): say so in words, alarm it, and wait (the next attempt is already delayed
        by ``_Client.takeover``) instead of taking it back at once. Returns the words."""
        b = self.cfg.brokers[self._broker]
        self.takeovers += 1
        if certainty == "certain":
            words = (
                f"session taken over: another client with id {self.client_id} took over the session"
            )
        else:
            words = (
                f"session taken over (suspected): the broker closed the connection right after "
                f"accepting it, {SHORT_LIVED_N} times in a row; another client with id "
                f"{self.client_id} probably takes over the session"
            )
        log.error(
            "mqtt_session_taken_over",
            message=words + "; is the same agent_id configured on another PC?",
            certainty=certainty,
            client_id=self.client_id,
            host=b.host,
            port=b.port,
            retry_in_s=round(retry_in_s, 1),
            takeovers=self.takeovers,
        )
        self.alarm(
            "session_taken_over",
            {
                "reason": words,
                "certainty": certainty,
                "client_id": self.client_id,
                "retry_in_s": round(retry_in_s, 1),
                "takeovers": self.takeovers,
            },
        )
        return f"{words}; next try in {retry_in_s:.0f} s"

    def _on_connect_failed(self, why: str) -> None:
        b = self.cfg.brokers[self._broker]
        self.connect_failures += 1
        log.warning(
            "mqtt_connect_failed",
            why=why,
            broker=self._broker,
            host=b.host,
            port=b.port,
            attempt=self.connect_failures,
        )
        self.connected = False
        self.last_error = why
        self.on_change()
        if why != self._alarmed_reason:  # once per outage and reason, not per attempt
            self._alarmed_reason = why
            self.alarm("mqtt_connect_failed", {"reason": why, "host": b.host, "port": b.port})
        self._count_failure()

    def _count_failure(self) -> None:
        self._fails += 1
        if len(self.cfg.brokers) > 1 and self._fails >= self.cfg.failover_after:
            self._fails = 0
            self._broker = (self._broker + 1) % len(self.cfg.brokers)
            self._aim()

    def status(self) -> dict[str, object]:
        """Broker connection state for ``edge-agent status`` (read from other threads)."""
        b = self.cfg.brokers[self._broker]
        last = self.last_puback_mono
        return {
            "connected": self.connected, "host": b.host, "port": b.port,
            "protocol": self.cfg.protocol, "tls": self.cfg.tls is not None,
            "last_puback_age_s": None if last is None else round(time.monotonic() - last, 3),
            "acked_rows": self.acked_rows, **self._counts(),
            "reconnects": self.reconnects, "takeovers": self.takeovers,
            "last_error": self.last_error, "connect_failures": self.connect_failures,
            # why, in words, and when the next attempt comes (None: connected/trying)
            "reason": reason_words(self.last_error),
            "next_retry_in_s": None if self.connected else next_retry_in(self.client),
        }  # fmt: skip


def publish_ok(rc: int) -> bool:
    """paho took the message (NO_CONN: queued in paho, sent after reconnect, P11)."""
    return rc in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN)
