"""``edge-agent hub run``: MQTT in, PostgreSQL out, acknowledged only after the commit.

One network thread (paho) queues every message with its connection generation; this thread
takes up to ``batch_max`` of them (waiting at most ``batch_wait_ms`` after the first), turns
them into rows, writes them in one transaction, and only after the commit sends their PUBACKs.
A hub killed with -9 has acknowledged nothing it did not commit: the broker redelivers the rest
to the next instance of the group (or to this one on restart), and the writes are idempotent.

If PostgreSQL is unreachable, the batch is retried (the connection reopened) until it commits;
nothing is acknowledged meanwhile, and the broker stops sending at ``receive_max`` unacked
messages, so memory stays bounded. A batch PostgreSQL refuses as data (a value it cannot
store) is split: each message alone, the one that still fails stored as a reject.
"""

from __future__ import annotations

import queue
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
import structlog

from edge_agent.hub import db, decode, gaps
from edge_agent.hub.config import HubConfig
from edge_agent.hub.mqtt import HubClient, on_connected
from edge_agent.hub.stats import Stats, serve_metrics

log = structlog.get_logger("edge_agent.hub")


@dataclass(frozen=True, slots=True)
class Msg:
    """One received message and the connection generation it came on."""

    gen: int
    mid: int
    qos: int
    topic: str
    payload: bytes
    t: float  # time.monotonic() at arrival


class Hub:
    """One hub instance (tests run several in one process or as subprocesses)."""

    def __init__(self, cfg: HubConfig) -> None:
        self.cfg = cfg
        self.stats = Stats()
        self.inbox: queue.Queue[Msg] = queue.Queue()
        self.stop_event = threading.Event()
        self.subscribed = threading.Event()
        self.client = HubClient(cfg)
        self.client.on_message = self._on_message
        on_connected(self.client, log, self.subscribed.set)
        self.conn: psycopg.Connection[Any] | None = None
        self.gap_thread: threading.Thread | None = None

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        now = time.monotonic()
        self.inbox.put(Msg(self.client.gen, msg.mid, msg.qos, msg.topic, bytes(msg.payload), now))

    def _db(self) -> psycopg.Connection[Any]:
        if self.conn is None or self.conn.closed:
            self.conn = db.connect(self.cfg.conninfo())
        return self.conn

    def start(self) -> None:
        """Migrate, connect to the broker, start the gap tracker."""
        applied = db.migrate(self._db())
        if applied:
            log.info("hub_migrated", applied=applied)
        self.client.start()
        tracker = gaps.GapTracker(self.cfg, self.client, self.stats, self.stop_event)
        self.gap_thread = threading.Thread(target=tracker.run, name="hub-gaps", daemon=True)
        self.gap_thread.start()
        log.info("hub_started", instance=self.cfg.hub.instance, group=self.cfg.hub.group)

    def run(self) -> None:
        """Write batches until :meth:`stop`."""
        while not self.stop_event.is_set():
            batch = self._take()
            if batch:
                self._commit(batch)

    def _take(self) -> list[Msg]:
        try:
            first = self.inbox.get(timeout=0.2)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self.cfg.hub.batch_wait_ms / 1000
        while len(batch) < self.cfg.hub.batch_max:
            try:
                batch.append(self.inbox.get_nowait())
            except queue.Empty:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    batch.append(self.inbox.get(timeout=left))
                except queue.Empty:
                    break
        return batch

    def _commit(self, batch: list[Msg]) -> None:
        t0 = time.monotonic()
        rows = decode.Rows()
        prefix = self.cfg.hub.topic_prefix
        for m in batch:
            decode.add(rows, prefix, m.topic, m.payload)
        delay = 0.5
        while True:
            try:
                self._write(rows, batch)
                break
            except psycopg.OperationalError as err:
                log.warning("hub_db_unavailable", error=str(err).strip()[:200], retry_s=delay)
                self.stats.db_errors += 1
                if self.conn is not None:
                    self.conn.close()
                if self.stop_event.wait(delay):
                    return  # stopping: nothing acknowledged, the broker redelivers
                delay = min(delay * 2, 5.0)
        acked = self.client.ack_all([(m.gen, m.mid, m.qos) for m in batch])
        now = time.monotonic()
        self.stats.batch(rows, now - t0, now - batch[0].t, acked, self.inbox.qsize())

    def _write(self, rows: decode.Rows, batch: list[Msg]) -> None:
        conn = self._db()
        try:
            self.stats.readings_new += db.write(conn, rows)
        except psycopg.DataError as err:
            log.warning("hub_batch_refused_split", error=str(err).strip()[:200])
            for m in batch:
                one = decode.Rows()
                decode.add(one, self.cfg.hub.topic_prefix, m.topic, m.payload)
                try:
                    self.stats.readings_new += db.write(conn, one)
                except psycopg.DataError as e:
                    reason = f"db_refused: {str(e).strip()[:120]}"
                    refused = decode.Rows(
                        rejects=[(decode.msg_hash(m.topic, m.payload), m.topic, m.payload, reason)]
                    )
                    db.write(conn, refused)
        if rows.responses:
            gaps.record_responses(conn, rows.responses, self.stats)

    def stop(self) -> None:
        """Stop taking messages; what is not committed is not acknowledged."""
        self.stop_event.set()
        self.client.disconnect()
        self.client.loop_stop()
        if self.conn is not None:
            self.conn.close()
        st = self.stats
        log.info(
            "hub_stopped",
            instance=self.cfg.hub.instance,
            messages=st.messages,
            readings=st.readings,
            readings_new=st.readings_new,
            batches=st.batches,
            rejects=st.rejects,
        )


def serve(cfg: HubConfig) -> int:
    """Run until SIGTERM/SIGINT; the service's main loop."""
    hub = Hub(cfg)
    stopping = threading.Event()

    def on_signal(_sig: int, _frame: Any) -> None:
        stopping.set()
        hub.stop_event.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if cfg.metrics.enabled:
        serve_metrics(cfg.metrics.port, hub.stats)
    hub.start()
    hub.run()
    hub.stop()
    return 0
