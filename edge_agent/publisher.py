"""The MQTT publisher: drains the SQLite queue to the broker, at least once, in a bounded window.

One thread, ``mqtt-publisher``, owns the paho client and its socket: it connects (TCP, TLS
handshake), publishes, reads PUBACKs and pings from a ``selectors`` loop over paho's socket and
a wake fd (:mod:`edge_agent.mqtt_loop`). No other thread calls paho, so none can write the
socket during a TLS handshake, and paho's callbacks run here (no hop per PUBACK). Other threads
post and signal the wake fd, at most once until the loop has taken what was posted.

The queue is the only source of truth (P1): paho is handed at most ``inflight`` messages at a
time (:mod:`edge_agent.lanes`), so its in-memory queue never grows and message ids never collide
past 65,535 (P2). A row is marked sent only on a PUBACK whose reason code is a success (< 0x80);
a failure code keeps the row, stores the code and raises an alarm; such rows are retried once a
minute (``reject_retry_s``, P5). Connection handling: :mod:`edge_agent.broker_link`.

Remote operations plug in through :mod:`edge_agent.publisher_remote` (``cmd/#``, responses,
the resend lane, birth and will); batches are split to the broker's Maximum Packet Size.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import SecretStr

from edge_agent import faults
from edge_agent import outbox as q
from edge_agent.broker_link import publish_ok
from edge_agent.config import MqttConfig
from edge_agent.lanes import Recent, Window
from edge_agent.liveness import Liveness
from edge_agent.messages import Message, fit, messages
from edge_agent.mqtt_client import build_client, tune_socket
from edge_agent.mqtt_loop import NetLoop
from edge_agent.publisher_remote import RemoteSeams
from edge_agent.reading import iso_utc
from edge_agent.side_messages import Side, SideMessages
from edge_agent.topics import Topics
from edge_agent.writer import Writer

log = structlog.get_logger(__name__)


class Publisher(RemoteSeams, threading.Thread):
    """Owner thread of the paho client. Args: the ``[mqtt]`` section, this agent's topics, its
    client id, the password or None, the queue file (read through its own WAL reader), and the
    writer PUBACKs and rejections are reported to."""

    #: Seconds a message may wait for its PUBACK while connected before its rows are re-sent.
    ACK_TIMEOUT_S = 30.0
    #: Alarms kept while disconnected, sent after reconnect.
    ALARM_BACKLOG = 100
    #: Rows committed this recently (seconds) are live after a (re)connect (T6).
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
        threading.Thread.__init__(self, name="mqtt-publisher", daemon=True)
        RemoteSeams.__init__(self, cfg, build_client(cfg, client_id, password), client_id)
        self.topics = topics
        self.writer = writer
        self.db_path = db_path
        self.side = SideMessages(self.ALARM_BACKLOG)
        self.net = NetLoop(self.client)
        self.window = Window(cfg.inflight, cfg.batch_max, self._fetch)
        self.recent = Recent(self.LIVE_S)
        #: Message ids handed to paho and not yet PUBACKed (rows and side messages).
        self._paho_mids: dict[int, str] = {}  # -> topic
        self._stopping = threading.Event()
        # rows (prio > 0) may be new since the last fill: own flags, and wake numbers the writer
        # writes (a shared flag read-and-cleared here could lose a wake set in between)
        self._dirty, self._prio_hint, self._wakes = True, True, itertools.count(1)
        self._woke = self._prio_woke = self._seen = self._prio_seen = 0
        #: Rows may be in the rejected state (from this run, or left by an earlier one).
        self._maybe_rejected, self._next_reject_retry = True, 0.0
        self.live = Liveness(self)
        self.rejects: Counter[str] = Counter()
        #: Called with seconds from publish to PUBACK per message (metrics histogram).
        self.on_ack_latency: Callable[[float], None] | None = None
        self.flush_s = 1.0
        c = self.client
        c.on_connect = self._paho_connect
        c.on_disconnect = self._paho_disconnect
        c.on_publish = self._paho_publish
        c.on_socket_open = lambda _c, _u, sock: tune_socket(sock, cfg.keepalive)
        self._init_remote()  # the will is set before each connection attempt

    # ---- called from other threads -------------------------------------------------------
    def _signal(self) -> None:
        self.net.signal()  # one wake per loop turn, however many posts

    def wake(self, first_n: int | None = None, *, prio: bool = True) -> None:
        """Rows from ``first_n`` on were committed (writer thread); ``prio``: some may be prio."""
        if first_n is not None:
            self.recent.record(time.monotonic(), first_n)
        n = next(self._wakes)
        self._prio_woke = n if prio else self._prio_woke
        self._woke = n
        self._signal()

    def alarm(self, name: str, details: dict[str, object]) -> None:
        """Publish an alarm event (best effort; kept in RAM while disconnected)."""
        body = {"schema": "edge-agent/alarm/v1", "alarm": name, "ts": time.time(), **details}
        self.side.post(Side(self.topics.alarm, json.dumps(body).encode(), False))
        self._signal()

    def retained(self, topic: str, payload: bytes) -> None:
        """Publish a retained side message (KPI snapshots); kept in RAM while disconnected."""
        self.side.post(Side(topic, payload, True))
        self._signal()

    def device_state(self, device: str, state: str, reason: str = "") -> None:
        """Publish the retained state of a device."""
        body = {"schema": "edge-agent/device_state/v1", "device": device, "state": state}
        body |= {"reason": reason, "ts": iso_utc(time.time_ns())}  # readings' ts format
        payload = json.dumps(body).encode()
        self.side.post(Side(self.topics.device_state(device), payload, True, device))
        self._signal()

    def stop(self, timeout: float = 3.0) -> None:
        """Stop taking new rows, wait up to ``flush_s`` for in-flight PUBACKs, go offline."""
        self._stopping.set()
        self._signal()
        self.join(timeout)

    def network_thread_alive(self) -> bool:
        """The socket's owner (this thread) runs: an exception in a callback kills it (P8)."""
        return self.is_alive()

    def _counts(self) -> dict[str, object]:
        return {
            "inflight_messages": len(self.window.inflight),
            # every QoS 1 message paho holds (in flight + queued): <= inflight + side (P2)
            "paho_messages": len(self._paho_mids),
            "rejects": dict(self.rejects),
        }

    # ---- the loop --------------------------------------------------------------------------
    def run(self) -> None:
        """Connect, then move rows from the queue to the broker until stopped."""
        self._reader = q.open_reader(self.db_path)
        self._aim()
        self.client.retry_at = time.monotonic()
        try:
            while not self._stopping.is_set():
                self._turn(None)
            self._drain_on_stop()
        finally:
            self._go_offline()
            self.net.close()
            self._reader.close()

    def _turn(self, wait_s: float | None) -> None:
        """Wait for the socket, a wake or the next deadline; then do what is due."""
        c = self.client
        now = time.monotonic()
        due = [now + max(1.0, self.cfg.keepalive / 4)]  # paho's keepalive and ping timeout
        if not self.net.connected_socket() and c.retry_at is not None:
            due.append(c.retry_at)
        if self.connected:
            expiry = self.window.next_expiry(self.ACK_TIMEOUT_S)
            due += [expiry] if expiry is not None else []
            due += [self._next_reject_retry] if self._maybe_rejected else []
        due += self._remote_due()
        self.live.idle()
        self.net.turn(min(due) if wait_s is None else now + wait_s)
        self.live.busy()
        retry_due = time.monotonic() >= (c.retry_at or float("inf"))
        if retry_due and not self.net.connected_socket() and not self._stopping.is_set():
            self.live.busy(allow_s=c.connect_timeout + 1.0)  # a blocking connect
            self._attempt()
        if not self.window.carrying():  # nothing follows paho's re-sends (Window.carrying)
            self.side.take(self.connected, self._publish)
        self._take_remote()
        if self.connected and not self._stopping.is_set():
            if self.window.expire(time.monotonic(), self.ACK_TIMEOUT_S):
                log.warning("mqtt_ack_timeout")
                self._rewind()
            if not self.window.carrying():
                self._fill_window()
                self._retry_rejected()
        self.net.flush()

    def _on_up(self) -> None:
        """After a CONNACK: cmd/# before the birth (in order), queue re-read, states, alarms."""
        self._remote_up()
        self._publish(self.topics.status, self.status_payload("online"), True)
        self.writer.sync()  # marks for rows already PUBACKed are committed before we re-read
        self.window.restart(self._live_split(), carry=True)
        self._dirty = self._prio_hint = True
        self._next_reject_retry = time.monotonic() + self.cfg.reject_retry_s
        self.side.resend_states(self._publish)

    def _publish(
        self, topic: str, payload: bytes, retain: bool, props: Properties | None = None
    ) -> Any:
        """Every QoS 1 publish: paho's messages are counted here (``paho_messages``)."""
        info = self.client.publish(topic, payload, qos=1, retain=retain, properties=props)
        if publish_ok(info.rc):
            self._paho_mids[info.mid] = topic
        return info

    def _paho_publish(self, _c: Any, _u: Any, mid: int, rc: ReasonCode, _p: Any = None) -> None:
        topic = self._paho_mids.pop(mid, None)
        if rc.is_failure:
            self.client.note_rejected()
        flight = self.window.acked(mid, not rc.is_failure)
        if flight is None or flight.lane == "resend":  # rows of a resend were marked before
            self._dirty |= flight is not None  # the resend lane's half of the window has room
            if flight is None and topic is not None and rc.is_failure:
                self._side_rejected(topic, rc)  # status, alarm, response: logged and counted
            return  # (or a message already given up on)
        if rc.is_failure:
            self.rejects[str(rc)] += 1
            log.error("mqtt_publish_rejected", reason=str(rc), code=rc.value, rows=len(flight.rows))
            self.writer.mark_rejected([(n, rc.value, str(rc)) for n in flight.rows])
            self._maybe_rejected = True
            reject = {"reason": str(rc), "code": rc.value, "rows": len(flight.rows)}
            self.alarm("publish_rejected", reject)
            return
        faults.hit("crash_after_puback")
        self.writer.mark_sent(flight.rows)
        self.acked_rows += len(flight.rows)
        self.last_puback_mono = time.monotonic()  # (a full window left _dirty set: refilled)
        if self.on_ack_latency is not None:
            self.on_ack_latency(self.last_puback_mono - flight.sent_mono)

    def _fetch(self, after: int, limit: int, upto: int | None, prio: bool) -> list[q.PendingRow]:
        return q.fetch_pending(self._reader, after, limit, upto, priority=prio)

    def _fill_window(self) -> None:
        woke, prio_woke = self._woke, self._prio_woke  # a wake from now on is seen next time
        dirty = self._dirty or woke != self._seen
        prio = self._prio_hint or prio_woke != self._prio_seen
        self._dirty, self._seen, self._prio_hint, self._prio_seen = False, woke, False, prio_woke
        if not dirty:
            return  # nothing committed and no room made since the lanes were found empty
        self.window.new_pass(prio=prio)
        while (nxt := self.window.next_rows()) is not None:
            lane, rows = nxt
            for m in fit(messages(rows, self.topics), self.topics, self.broker_max_packet):
                self._send(m, lane)
        if self.window.full():
            self._dirty = True  # lanes may have more: look again when an ack makes room

    def _send(self, m: Message, lane: str) -> None:
        info = self._publish(m.topic, m.payload, m.retain)
        faults.hit("crash_after_publish_call")
        if not publish_ok(info.rc):
            log.error("mqtt_publish_call_failed", rc=info.rc)
            self._rewind()
            return
        self.window.sent(info.mid, [r.n for r in m.rows], lane, time.monotonic())

    def _live_split(self) -> int:
        """Row number up to which pending rows are backlog; rows after it are live."""
        return self.recent.split(time.monotonic(), q.max_n(self._reader))

    def _rewind(self) -> None:
        """Forget the cursors so every pending row not in flight is fetched again."""
        self.writer.sync()  # marks of rows already PUBACKed are committed before we re-read
        self.window.restart(self._live_split(), carry=False)
        self._dirty = True

    def _retry_rejected(self) -> None:
        now = time.monotonic()
        if not self._maybe_rejected or now < self._next_reject_retry or self.window.full():
            return
        self._next_reject_retry = now + self.cfg.reject_retry_s
        self.writer.sync()  # only when rejections may exist: it stalls this thread a commit
        rows = q.fetch_rejected(self._reader, self.cfg.batch_max)
        self._maybe_rejected = bool(rows)
        rows = [r for r in rows if r.n not in self.window.flying]
        if rows:
            log.info("mqtt_retry_rejected", rows=len(rows))
            for m in fit(messages(rows, self.topics), self.topics, self.broker_max_packet):
                self._send(m, "retry")

    def _drain_on_stop(self) -> None:
        deadline = time.monotonic() + self.flush_s
        while self.window.inflight and self.connected and time.monotonic() < deadline:
            self._turn(0.05)
        if self.window.inflight:
            log.warning("mqtt_stop_unacked", messages=len(self.window.inflight))
