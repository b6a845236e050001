"""The daemon: wires drivers -> writer (SQLite) -> publisher (MQTT) and runs until SIGTERM.

Start order: config is loaded by the caller; the queue is opened and checked; the writer and
publisher start; devices are opened in the background (an absent device does not block start);
then READY=1. Stop order (SIGTERM, SIGINT): devices stop reading; the writer commits what they
read; the publisher gets up to ``flush_s`` for PUBACKs of what is in flight; the writer commits
those marks; exit. Anything not PUBACKed stays pending in the queue for the next start.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from types import FrameType

import structlog

from drivers import driver_class
from edge_agent import sdnotify
from edge_agent.config import AgentConfig
from edge_agent.logs import register_secret
from edge_agent.publisher import Publisher
from edge_agent.queue import Outbox
from edge_agent.reading import Identity, Reading, boot_id
from edge_agent.supervisor import DeviceWorker
from edge_agent.topics import Topics
from edge_agent.writer import Writer

log = structlog.get_logger(__name__)


class Daemon:
    """The running agent.

    Args:
        cfg: a validated configuration.
    """

    #: Seconds between STATUS= updates to systemd.
    STATUS_EVERY_S = 10.0

    def __init__(self, cfg: AgentConfig) -> None:
        self.cfg = cfg
        self.stopping = threading.Event()
        n = cfg.node
        self.node = Identity(agent=n.agent_id, site=n.site, line=n.line, boot_id=boot_id())
        self.topics = Topics(cfg.mqtt.topic_prefix, n.site, n.line, n.agent_id)
        password = cfg.password()
        if password is not None:
            register_secret(password.get_secret_value())
        q = cfg.queue
        q.path.parent.mkdir(parents=True, exist_ok=True)
        self.outbox = Outbox(q.path, self.node, q.max_bytes, q.retain_sent_hours * 3600)
        self.writer = Writer(self.outbox, self._on_commit, self._on_alarm)
        self.publisher = Publisher(
            cfg.mqtt, self.topics, f"edge-agent-{n.agent_id}", password, q.path, self.writer
        )
        self.workers = [
            DeviceWorker(
                driver_class(dev.type)(dev_id, dev), self.writer.submit, self.publisher.device_state
            )
            for dev_id, dev in cfg.devices.items()
            if dev.enabled
        ]

    def _on_commit(self, accepted: list[tuple[int, Reading]]) -> None:
        self.publisher.wake()
        for _n, r in accepted[-3:] if len(accepted) > 3 else accepted:
            log.debug("reading_committed", device=r.device, seq=r.seq, id=r.id)

    def _on_alarm(self, name: str, details: dict[str, object]) -> None:
        self.publisher.alarm(name, details)

    def start(self) -> None:
        """Start every thread, then tell systemd we are ready."""
        self.writer.start()
        self.publisher.start()
        for w in self.workers:
            w.start()
        log.info(
            "started",
            agent=self.node.agent,
            site=self.node.site,
            line=self.node.line,
            devices=[w.driver.device_id for w in self.workers],
            queue=str(self.cfg.queue.path),
            pending=self.outbox.counters["pending"],
            topics=self.topics.base,
            host=socket.gethostname(),
        )
        sdnotify.notify("READY=1\nSTATUS=" + self.status_line())

    def status_line(self) -> str:
        """One line for ``systemctl status``: devices, queue depth, broker."""
        up = sum(w.state == "connected" for w in self.workers)
        broker = "up" if self.publisher.connected else "down"
        pending = self.outbox.counters["pending"]
        return f"devices {up}/{len(self.workers)} up, queue {pending} pending, broker {broker}"

    def healthy(self, window: float) -> bool:
        """True while the writer and publisher threads are alive and looping."""
        now = time.monotonic()
        return (
            self.writer.is_alive()
            and self.publisher.is_alive()
            and now - self.writer.last_progress < window
            and now - self.publisher.last_progress < window
        )

    def serve(self) -> None:
        """Block until stop is requested, pinging the watchdog while the pipeline progresses."""
        ping = sdnotify.watchdog_interval()
        next_status = time.monotonic() + self.STATUS_EVERY_S
        while not self.stopping.wait(min(ping or 1.0, 1.0)):
            if ping is not None and self.healthy(window=max(2 * ping, 2.5)):
                sdnotify.notify("WATCHDOG=1")
            if time.monotonic() >= next_status:
                next_status = time.monotonic() + self.STATUS_EVERY_S
                sdnotify.notify("STATUS=" + self.status_line())

    def stop(self) -> None:
        """Flush and stop, within about 2 s."""
        sdnotify.notify("STOPPING=1")
        t0 = time.monotonic()
        for w in self.workers:
            w.stop()
        for w in self.workers:
            w.join(0.5)
        self.writer.sync(timeout=1.0)
        self.publisher.stop(timeout=1.5)
        self.writer.stop(timeout=1.0)
        self.outbox.close()
        log.info("stopped", seconds=round(time.monotonic() - t0, 3), **self.outbox.counters)

    def request_stop(self, signum: int, _frame: FrameType | None) -> None:
        """Signal handler: SIGTERM / SIGINT."""
        log.info("stop_requested", signal=signal.Signals(signum).name)
        self.stopping.set()


def run(cfg: AgentConfig) -> int:
    """Run the daemon until SIGTERM/SIGINT. Returns the exit code."""
    daemon = Daemon(cfg)
    signal.signal(signal.SIGTERM, daemon.request_stop)
    signal.signal(signal.SIGINT, daemon.request_stop)
    daemon.start()
    try:
        daemon.serve()
    finally:
        daemon.stop()
    return 0
