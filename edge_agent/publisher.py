"""The MQTT publisher: drains the SQLite queue to the broker, at least once, in a bounded window.

One owner thread makes every paho call; paho's callbacks only put events on a queue (paho's
lock-order deadlocks, docs/reliability.md P7). The queue is the only source of truth (P1): paho is
handed at most ``inflight`` messages at a time, so its in-memory queue never grows and message ids
never collide past 65,535 (P2). A row is marked sent only on a PUBACK whose reason code is a success
(< 0x80); a failure code keeps the row, stores the code and raises an alarm; such rows are
retried once a minute (``reject_retry_s``, P5).

A broker that cannot be reached says why: the TLS error (``certificate verify failed: ...``,
an alert the broker sent such as ``certificate expired``), the refused CONNACK (``0x86 Bad user
name or password``) or the socket error goes into the ``mqtt_connect_failed`` log line, into
``last_error`` (STATUS=, ``edge-agent status``) and into a ``mqtt_connect_failed`` alarm kept in
RAM and published once connected (one per outage and reason). paho retries with exponential
backoff (0.5 s doubling to ``reconnect_max_s``); readings keep being committed meanwhile.

The paho client itself (TLS, credentials, reconnect delays, why a connect failed) is built in
:mod:`edge_agent.mqtt_client`.

Two streams share the window. *Live* rows (committed since the last connect, or in the
``LIVE_S`` seconds before it) go first, one
reading per message while they trickle in, batched when they pile up. The *backlog* (rows
committed before that) fills the rest of the window in batches of
up to ``batch_max`` readings. Each stream is sent in queue order (per-device ``seq`` order); a
backend that needs strict order across streams sorts by ``seq``.
"""

from __future__ import annotations

import contextlib
import json
import queue
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import SecretStr

from edge_agent import faults
from edge_agent import outbox as q
from edge_agent.config import MqttConfig
from edge_agent.messages import Message, fit, messages
from edge_agent.mqtt_client import (
    SHORT_LIVED_N,
    build_client,
    connect_error,
    next_retry_in,
    reason_words,
)
from edge_agent.reading import iso_utc
from edge_agent.topics import Topics
from edge_agent.writer import Writer

log = structlog.get_logger(__name__)


# ---- the publisher's inbox: what other threads (and paho's callbacks) post to it ---------
@dataclass(frozen=True, slots=True)
class _Wake:
    """Rows were committed, or stop was asked: look at the queue again."""


@dataclass(frozen=True, slots=True)
class _Acked:
    """paho: the PUBACK of message ``mid`` came, with reason code ``rc``."""

    mid: int
    rc: ReasonCode


@dataclass(frozen=True, slots=True)
class _Connected:
    """paho: a CONNACK came (``rc`` may be a refusal)."""

    rc: ReasonCode


@dataclass(frozen=True, slots=True)
class _ConnectFailed:
    """paho: the TCP/TLS connection attempt failed; ``error`` says why when known."""

    error: str | None


@dataclass(frozen=True, slots=True)
class _Disconnected:
    """paho: the connection closed; ``takeover`` when another client took the session."""

    rc: ReasonCode
    error: str | None
    takeover: tuple[str, float] | None


@dataclass(frozen=True, slots=True)
class _SideMessage:
    """An alarm or KPI snapshot to publish (kept while disconnected)."""

    topic: str
    payload: bytes
    retain: bool


@dataclass(frozen=True, slots=True)
class _DeviceState:
    """The retained state of a device (the latest per device is re-sent on reconnect)."""

    device: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class _Respond:
    """remote-ops: a command response (QoS 1, Correlation Data echoed on MQTT 5)."""

    topic: str
    payload: bytes
    correlation: bytes | None


@dataclass(frozen=True, slots=True)
class _PauseCommands:
    """remote-ops: a command flood: unsubscribe from ``cmd/#`` for ``seconds``."""

    seconds: float


_Inbox = (
    _Wake | _Acked | _Connected | _ConnectFailed | _Disconnected | _SideMessage | _DeviceState
    | _Respond | _PauseCommands
)  # fmt: skip


@dataclass(slots=True)
class _Msg:
    rows: list[int]
    stream: str
    sent_mono: float
    #: remote-ops: a resent message's completion (``ok``), called on PUBACK or give-up
    done: Callable[[bool], None] | None = None


class Publisher(threading.Thread):
    """Owner thread of the paho client.

    Args:
        cfg: the ``[mqtt]`` section.
        topics: this agent's topic tree.
        client_id: deterministic client id (``edge-agent-<agent_id>``).
        password: the secret, or None.
        db_path: the queue file (read through its own WAL reader connection).
        writer: where PUBACKs and rejections are reported.
    """

    #: Seconds a message may wait for its PUBACK while connected before its rows are re-sent.
    ACK_TIMEOUT_S = 30.0
    #: Longest idle wait per loop, seconds: the loop proves it is alive this often (watchdog).
    IDLE_S = 0.25
    #: Alarms kept while disconnected, sent after reconnect.
    ALARM_BACKLOG = 100
    #: Rows committed this recently (seconds) are live after a (re)connect, not backlog: a
    #: reading taken while the link was coming up must not wait behind hours of backlog (T6).
    LIVE_S = 5.0

    def __init__(
        self,
        cfg: MqttConfig,
        topics: Topics,
        client_id: str,
        password: SecretStr | None,
        db_path: Path,
        writer: Writer,
    ) -> None:
        super().__init__(name="mqtt-publisher", daemon=True)
        self.cfg = cfg
        self.topics = topics
        self.writer = writer
        self.db_path = db_path
        self.client_id = client_id
        self.client = build_client(cfg, client_id, password)
        self._events: queue.SimpleQueue[_Inbox] = queue.SimpleQueue()
        self._inflight: dict[int, _Msg] = {}
        self._flying: set[int] = set()
        #: Rows in flight when the connection came up. paho re-sends them itself (P6) and their
        #: PUBACK can come, with the sent mark still queued at the writer, before the backlog
        #: pass reads them: kept out of every fetch until that pass is over.
        self._carried: set[int] = set()
        self._device_states: dict[str, bytes] = {}
        #: Message ids handed to paho and not yet PUBACKed (rows and side messages).
        self._paho_mids: set[int] = set()
        self._alarms: deque[tuple[str, bytes, bool]] = deque(maxlen=self.ALARM_BACKLOG)
        self._stopping = threading.Event()
        self._broker = 0
        self._fails = 0
        #: Failed connection attempts since the last successful CONNACK.
        self.connect_failures = 0
        self._alarmed_reason: str | None = None
        self._connack_refused = False
        self._live_cursor = 0
        self._backlog_cursor = 0
        self._backlog_upto = 0
        self._prio_cursor = 0
        #: (monotonic time, first row number) of recent commits, for the live/backlog split.
        self._recent: deque[tuple[float, int]] = deque()
        self._recent_lock = threading.Lock()
        self._next_reject_retry = 0.0
        #: Rows may be in the rejected state (from this run, or left by an earlier one).
        self._maybe_rejected = True
        self.connected = False
        #: Why the broker is not connected (shown in STATUS=), None while connected.
        self.last_error: str | None = None
        self.last_progress = time.monotonic()
        self.last_puback_mono: float | None = None
        self.acked_rows = 0
        self.rejects: Counter[str] = Counter()
        self.reconnects = 0
        #: Times the broker gave our session to another client with our id (MQTT 5 0x8E).
        self.takeovers = 0
        #: Called with seconds from publish to PUBACK per message (metrics histogram).
        self.on_ack_latency: Callable[[float], None] | None = None
        self.flush_s = 1.0
        # ---- remote-ops seams (issue 14): see edge_agent/remote/ ----
        #: ``(topic, payload, response topic, correlation)`` of a request on ``{base}/cmd/#``,
        #: called in paho's thread (it must only enqueue); None: no subscription.
        self.on_command: Callable[[str, bytes, str | None, bytes | None], None] | None = None
        #: ``state -> status.v1 payload`` for the retained status topic (None: plain words).
        self.birth: Callable[[str], bytes] | None = None
        #: The resend lane (lowest priority): messages and their completion callbacks.
        self._resend: deque[tuple[Message, Callable[[bool], None]]] = deque()
        #: The broker's MQTT 5 Receive Maximum and Maximum Packet Size (CONNACK), if given.
        self.broker_receive_max: int | None = None
        self.broker_max_packet: int | None = None
        #: Commands paused (a flood) until this monotonic time; 0: subscribed when connected.
        self._commands_paused_until = 0.0
        self._wire_callbacks()

    # ---- called from other threads -------------------------------------------------------
    def wake(self, first_n: int | None = None) -> None:
        """New rows were committed, the first of them numbered ``first_n`` (writer thread).

        Recorded here, not in the event queue: a (re)connect handled before this wake event
        must still see these rows as live.
        """
        if first_n is not None:
            now = time.monotonic()
            with self._recent_lock:
                self._recent.append((now, first_n))
                while now - self._recent[0][0] > self.LIVE_S:
                    self._recent.popleft()
        self._events.put(_Wake())

    def alarm(self, name: str, details: dict[str, object]) -> None:
        """Publish an alarm event (best effort; kept in RAM while disconnected)."""
        body = {"schema": "edge-agent/alarm/v1", "alarm": name, "ts": time.time(), **details}
        self._events.put(_SideMessage(self.topics.alarm, json.dumps(body).encode(), False))

    def retained(self, topic: str, payload: bytes) -> None:
        """Publish a retained side message (KPI snapshots); kept in RAM while disconnected."""
        self._events.put(_SideMessage(topic, payload, True))

    def device_state(self, device: str, state: str, reason: str = "") -> None:
        """Publish the retained state of a device."""
        body = {
            "schema": "edge-agent/device_state/v1",  # remote-ops: a schema, readings' ts format
            "device": device, "state": state, "reason": reason, "ts": iso_utc(time.time_ns()),
        }  # fmt: skip
        self._events.put(_DeviceState(device, json.dumps(body).encode()))

    # ---- remote-ops seams: called from the command threads ------------------------------
    def respond(self, topic: str, payload: bytes, correlation: bytes | None) -> None:
        """Publish a command response (dropped if disconnected: the backend asks again)."""
        self._events.put(_Respond(topic, payload, correlation))

    def resend(self, message: Message, done: Callable[[bool], None]) -> None:
        """Queue ``message`` (rows already sent once) behind live traffic and backlog."""
        self._resend.append((message, done))
        self._events.put(_Wake())

    def pause_commands(self, seconds: float) -> None:
        """A command flood: unsubscribe from ``{base}/cmd/#`` for ``seconds``."""
        self._events.put(_PauseCommands(seconds))

    def _status_payload(self, state: str) -> bytes:
        return state.encode() if self.birth is None else self.birth(state)

    def stop(self, timeout: float = 3.0) -> None:
        """Stop taking new rows, wait up to ``flush_s`` for in-flight PUBACKs, go offline."""
        self._stopping.set()
        self._events.put(_Wake())
        self.join(timeout)

    def network_thread_alive(self) -> bool:
        """paho's network thread is running (it can die on an uncaught exception, P8).

        The thread is the one paho's ``loop_start`` made; it is known from inside it (it runs
        every ``reconnect()``, see ``_Client.network_thread``), not from paho's private
        ``_thread``. Unknown until its first connection attempt: not healthy yet.
        """
        thread = self.client.network_thread
        return thread is not None and thread.is_alive()

    def status(self) -> dict[str, object]:
        """Broker connection state for ``edge-agent status`` (read from other threads)."""
        b = self.cfg.brokers[self._broker]
        last = self.last_puback_mono
        return {
            "connected": self.connected, "host": b.host, "port": b.port,
            "protocol": self.cfg.protocol, "tls": self.cfg.tls is not None,
            "last_puback_age_s": None if last is None else round(time.monotonic() - last, 3),
            "acked_rows": self.acked_rows, "inflight_messages": len(self._inflight),
            # every QoS 1 message paho holds (in flight + queued): <= inflight + side messages (P2)
            "paho_messages": len(self._paho_mids),
            "rejects": dict(self.rejects), "reconnects": self.reconnects,
            "takeovers": self.takeovers,
            "last_error": self.last_error, "connect_failures": self.connect_failures,
            # why, in words, and when paho's reconnect loop tries next (None: connected/trying)
            "reason": reason_words(self.last_error),
            "next_retry_in_s": None if self.connected else next_retry_in(self.client),
        }  # fmt: skip

    # ---- paho callbacks: only enqueue ----------------------------------------------------
    def _wire_callbacks(self) -> None:
        c = self.client
        c.on_connect = self._paho_connect
        c.on_connect_fail = self._paho_connect_fail
        c.on_disconnect = self._paho_disconnect
        c.on_publish = self._paho_publish
        c.on_socket_open = lambda _c, _u, sock: self._set_user_timeout(sock)
        c.on_message = self._paho_message
        c.will_set(self.topics.status, b"offline", qos=1, retain=True)

    def _paho_connect(self, _c: Any, _u: Any, _f: Any, rc: ReasonCode, _p: Any = None) -> None:
        if not rc.is_failure:
            self.client.note_connected()
            # remote-ops seam: the broker's limits, read before the owner thread sees _Connected
            self.broker_receive_max = getattr(_p, "ReceiveMaximum", None)
            self.broker_max_packet = getattr(_p, "MaximumPacketSize", None)
        self._events.put(_Connected(rc))

    def _paho_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        """remote-ops seam: a command request (paho's thread: hand it over, nothing more)."""
        if self.on_command is not None:
            props = getattr(msg, "properties", None)
            self.on_command(
                msg.topic,
                bytes(msg.payload),
                getattr(props, "ResponseTopic", None),
                getattr(props, "CorrelationData", None),
            )

    def _paho_connect_fail(self, c: Any, _u: Any) -> None:
        self.client.note_failure()
        self._events.put(_ConnectFailed(connect_error(c)))

    def _paho_disconnect(self, c: Any, _u: Any, flags: Any, rc: ReasonCode, _p: Any = None) -> None:
        # runs in paho's thread before it computes the reconnect wait, so a takeover's back-off
        # applies to the very next attempt
        from_server = bool(getattr(flags, "is_disconnect_packet_from_server", False))
        takeover = self.client.takeover(rc, from_server)
        self.client.note_failure()  # after a takeover's back-off changed the delays
        self._events.put(_Disconnected(rc, connect_error(c), takeover))

    def _paho_publish(self, _c: Any, _u: Any, mid: int, rc: ReasonCode, _p: Any = None) -> None:
        if rc.is_failure:
            self.client.note_rejected()
        self._events.put(_Acked(mid, rc))

    def _set_user_timeout(self, sock: Any) -> None:
        """Half-open links (P12): the kernel drops the connection when sent data has gone
        unacknowledged for keepalive/2. paho alone notices only 2 x keepalive after the last
        byte in (PINGREQ after one keepalive, gives up after another); with this the agent sees a
        cut link keepalive/2 after its next publish, and about 1.5 x keepalive when idle (T5).
        Runs in paho's thread as the socket opens; a syscall on that socket, no lock taken."""
        opt = getattr(socket, "TCP_USER_TIMEOUT", None)  # Linux only
        if opt is not None:
            with contextlib.suppress(OSError, AttributeError):  # AttributeError: websockets
                sock.setsockopt(socket.IPPROTO_TCP, opt, self.cfg.keepalive * 500)

    # ---- owner thread --------------------------------------------------------------------
    def run(self) -> None:
        """Connect, then move rows from the queue to the broker until stopped."""
        self._reader = q.open_reader(self.db_path)
        self.client.will_set(self.topics.status, self._status_payload("offline"), 1, retain=True)
        self._connect_async()
        # paho's own thread: loop_start also makes the socket pair that wakes its select()
        # when another thread publishes (a thread of ours running loop_forever would not have
        # it, and paho would then write the socket from the publishing thread)
        self.client.loop_start()
        try:
            while not self._stopping.is_set():
                self._step(timeout=self.IDLE_S)
            self._drain_on_stop()
        finally:
            self._go_offline()
            self._reader.close()

    def _connect_async(self) -> None:
        b = self.cfg.brokers[self._broker]
        log.info("mqtt_connecting", host=b.host, port=b.port, protocol=self.cfg.protocol)
        self.client.connect_async(b.host, b.port, keepalive=self.cfg.keepalive)

    def _step(self, timeout: float) -> None:
        event: _Inbox
        try:
            event = self._events.get(timeout=timeout)
        except queue.Empty:
            event = _Wake()  # the idle tick: expire, refill, retry
        while True:
            self._handle(event)
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                break
        if self.connected and not self._stopping.is_set():
            self._expire_inflight()
            self._fill_window()
            self._retry_rejected()
            self._resume_commands()
        self.last_progress = time.monotonic()

    def _handle(self, event: _Inbox) -> None:
        match event:
            case _Acked(mid, rc):
                self._on_ack(mid, rc)
            case _Connected(rc):
                self._on_connect(rc)
            case _Disconnected(rc, error, takeover):
                self._on_disconnect(rc, error, takeover)
            case _ConnectFailed(error):
                self._connack_refused = False
                self._on_connect_failed(error or "tcp/tls connect failed")
            case _SideMessage():
                self._alarms.append((event.topic, event.payload, event.retain))
                self._flush_side_messages()
            case _Respond(topic, payload, correlation):
                self._respond(topic, payload, correlation)
            case _PauseCommands(seconds):
                self._commands_paused_until = time.monotonic() + seconds
                if self.connected:
                    self.client.unsubscribe(f"{self.topics.base}/cmd/#")
            case _DeviceState(device, payload):
                self._device_states[device] = payload
                if self.connected:
                    self._publish(self.topics.device_state(device), payload, True)
            case _Wake():
                pass

    def _on_connect(self, rc: ReasonCode) -> None:
        if rc.is_failure:
            self._connack_refused = True  # the broker closes next: one failure, not two
            self._on_connect_failed(f"CONNACK {rc.value:#04x} {rc}")
            return
        b = self.cfg.brokers[self._broker]
        log.info(
            "mqtt_connected",
            host=b.host,
            port=b.port,
            inflight=len(self._inflight),
            after_failures=self.connect_failures,
        )
        self.connected = True
        self.last_error = None
        self._fails = 0
        self.connect_failures = 0
        self._alarmed_reason = None
        self._publish(self.topics.status, self._status_payload("online"), True)
        # remote-ops seams: the will of the next connection carries the state of now; the
        # command subscription (clean session or not, asked again after every CONNACK)
        self.client.will_set(self.topics.status, self._status_payload("offline"), 1, retain=True)
        if self.on_command is not None and not self._commands_paused_until:
            self.client.subscribe(f"{self.topics.base}/cmd/#", qos=1)
        self.writer.sync()  # marks for rows already PUBACKed are committed before we re-read
        self._backlog_upto = self._live_split()
        self._backlog_cursor = 0
        self._prio_cursor = 0
        self._live_cursor = self._backlog_upto
        self._carried = set(self._flying)
        self._next_reject_retry = time.monotonic() + self.cfg.reject_retry_s
        for device, body in self._device_states.items():
            self._publish(self.topics.device_state(device), body, True)
        self._flush_side_messages()

    def _on_disconnect(
        self, rc: ReasonCode, error: str | None, takeover: tuple[str, float] | None
    ) -> None:
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
        log.warning("mqtt_disconnected", reason=why, inflight=len(self._inflight))
        self.connected = False
        self.last_error = why
        self._count_failure()

    def _on_takeover(self, certainty: str, retry_in_s: float) -> str:
        """The broker gave our session to another client with our id (a copied config on a
        second PC): say so in words, alarm it, and wait (paho's next attempt is already
        delayed by ``_Client.takeover``) instead of taking it back at once. Returns the words.
        """
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
        if why != self._alarmed_reason:  # once per outage and reason, not per attempt
            self._alarmed_reason = why
            self.alarm("mqtt_connect_failed", {"reason": why, "host": b.host, "port": b.port})
        self._count_failure()

    def _count_failure(self) -> None:
        self._fails += 1
        if len(self.cfg.brokers) > 1 and self._fails >= self.cfg.failover_after:
            self._fails = 0
            self._broker = (self._broker + 1) % len(self.cfg.brokers)
            self._connect_async()

    def _publish(self, topic: str, payload: bytes, retain: bool) -> mqtt.MQTTMessageInfo:
        """Every QoS 1 publish goes through here, so the messages paho holds are counted by
        us (``paho_messages``), not read from paho's internals."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        if info.rc in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            self._paho_mids.add(info.mid)
        return info

    def _on_ack(self, mid: int, rc: ReasonCode) -> None:
        self._paho_mids.discard(mid)
        msg = self._inflight.pop(mid, None)
        if msg is None:
            return  # status/alarm message, or a message already given up on
        if msg.done is not None:  # remote-ops: a resent message (its rows were sent before)
            msg.done(not rc.is_failure)
            return
        self._flying.difference_update(msg.rows)
        if rc.is_failure:
            self.rejects[str(rc)] += 1
            log.error("mqtt_publish_rejected", reason=str(rc), code=rc.value, rows=len(msg.rows))
            self.writer.mark_rejected([(n, rc.value, str(rc)) for n in msg.rows])
            self._maybe_rejected = True
            self.alarm(
                "publish_rejected", {"reason": str(rc), "code": rc.value, "rows": len(msg.rows)}
            )
            return
        faults.hit("crash_after_puback")
        self.writer.mark_sent(msg.rows)
        self.acked_rows += len(msg.rows)
        self.last_puback_mono = time.monotonic()
        if self.on_ack_latency is not None:
            self.on_ack_latency(self.last_puback_mono - msg.sent_mono)

    def _fill_window(self) -> None:
        window = self._window()
        while len(self._inflight) < window:
            if not (
                self._take("priority")
                or self._take("live")
                or self._take("backlog")
                or self._take_resend(window)
            ):
                return

    # ---- remote-ops seams: the broker's limits, the resend lane -------------------------
    def _window(self) -> int:
        """``inflight``, or fewer when the broker's Receive Maximum says so (room kept for
        status, alarm and response messages)."""
        rmax = self.broker_receive_max
        return self.cfg.inflight if rmax is None else max(1, min(self.cfg.inflight, rmax - 4))

    def _take_resend(self, window: int) -> bool:
        """One resent message, when nothing else waits; it holds at most half the window, so
        a live reading arriving next finds a free slot."""
        busy = sum(m.done is not None for m in self._inflight.values())
        if not self._resend or busy >= max(1, window // 2):
            return False
        m, done = self._resend.popleft()
        info = self._publish(m.topic, m.payload, m.retain)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            done(False)
        else:
            self._inflight[info.mid] = _Msg([], "resend", time.monotonic(), done)
        return True

    def _resume_commands(self) -> None:
        if self._commands_paused_until and time.monotonic() >= self._commands_paused_until:
            self._commands_paused_until = 0.0
            if self.on_command is not None:
                log.info("remote_commands_resumed")
                self.client.subscribe(f"{self.topics.base}/cmd/#", qos=1)

    def _respond(self, topic: str, payload: bytes, correlation: bytes | None) -> None:
        if not self.connected:
            log.info("remote_response_dropped", topic=topic, reason="not connected")
            return
        props = None
        if correlation is not None and self.cfg.protocol == "5":
            props = Properties(PacketTypes.PUBLISH)
            props.CorrelationData = correlation
        info = self.client.publish(topic, payload, qos=1, properties=props)
        if info.rc in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            self._paho_mids.add(info.mid)

    def _take(self, stream: str) -> bool:
        """Send the next rows of ``stream``; False when it has nothing more."""
        if stream == "priority":
            after, upto = self._prio_cursor, None
        elif stream == "live":
            after, upto = self._live_cursor, None
        elif self._backlog_cursor < self._backlog_upto:
            after, upto = self._backlog_cursor, self._backlog_upto
        else:
            self._carried.clear()
            return False
        prio = stream == "priority"
        limit = 1 if prio else self.cfg.batch_max
        rows = q.fetch_pending(self._reader, after, limit, upto, priority=prio)
        if not rows:
            if stream == "backlog":
                self._backlog_cursor = self._backlog_upto
            return False
        if prio:
            self._prio_cursor = rows[-1].n
        elif stream == "live":
            self._live_cursor = rows[-1].n
        else:
            self._backlog_cursor = rows[-1].n
        rows = [r for r in rows if r.n not in self._flying and r.n not in self._carried]
        for m in fit(messages(rows, self.topics), self.topics, self.broker_max_packet):
            self._send(m, stream)
        return True

    def _send(self, m: Message, stream: str) -> None:
        info = self._publish(m.topic, m.payload, m.retain)
        faults.hit("crash_after_publish_call")
        # rc NO_CONN still queues the message in paho (P11): it is sent after reconnect.
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            log.error("mqtt_publish_call_failed", rc=info.rc, error=mqtt.error_string(info.rc))
            self._rewind()
            return
        msg = _Msg([r.n for r in m.rows], stream, time.monotonic())
        self._inflight[info.mid] = msg
        self._flying.update(msg.rows)

    def _live_split(self) -> int:
        """Row number up to which pending rows are backlog; rows after it are live."""
        top = q.max_n(self._reader)
        now = time.monotonic()
        with self._recent_lock:
            while self._recent and now - self._recent[0][0] > self.LIVE_S:
                self._recent.popleft()
            return min(top, self._recent[0][1] - 1) if self._recent else top

    def _rewind(self) -> None:
        """Forget the cursors so every pending row not in flight is fetched again."""
        self.writer.sync()  # marks of rows already PUBACKed are committed before we re-read
        self._carried.clear()
        self._backlog_upto = self._live_split()
        self._backlog_cursor = 0
        self._prio_cursor = 0
        self._live_cursor = self._backlog_upto

    def _expire_inflight(self) -> None:
        now = time.monotonic()
        late = [mid for mid, m in self._inflight.items() if now - m.sent_mono > self.ACK_TIMEOUT_S]
        if not late:
            return
        for mid in late:
            m = self._inflight.pop(mid)
            self._flying.difference_update(m.rows)
            if m.done is not None:
                m.done(False)
        log.warning("mqtt_ack_timeout", messages=len(late))
        self._rewind()

    def _retry_rejected(self) -> None:
        now = time.monotonic()
        if not self._maybe_rejected or now < self._next_reject_retry:
            return
        if len(self._inflight) >= self.cfg.inflight:
            return
        self._next_reject_retry = now + self.cfg.reject_retry_s
        self.writer.sync()  # only when rejections may exist: it stalls this thread a commit
        rows = q.fetch_rejected(self._reader, self.cfg.batch_max)
        self._maybe_rejected = bool(rows)
        rows = [r for r in rows if r.n not in self._flying]
        if rows:
            log.info("mqtt_retry_rejected", rows=len(rows))
            for m in messages(rows, self.topics):  # events on their own topics, as first sent
                self._send(m, "retry")

    def _flush_side_messages(self) -> None:
        while self.connected and self._alarms:
            topic, payload, retain = self._alarms.popleft()
            self._publish(topic, payload, retain)

    def _drain_on_stop(self) -> None:
        deadline = time.monotonic() + self.flush_s
        while self._inflight and self.connected and time.monotonic() < deadline:
            self._step(timeout=0.05)
        if self._inflight:
            log.warning("mqtt_stop_unacked", messages=len(self._inflight))

    def _go_offline(self) -> None:
        try:
            if self.connected:
                info = self._publish(
                    self.topics.status, self._status_payload("offline-clean"), True
                )
                info.wait_for_publish(timeout=0.3)
            self.client.disconnect()
        except (RuntimeError, ValueError, OSError) as err:
            log.debug("mqtt_offline_failed", error=str(err))
        self.client.loop_stop()
