"""The daemon: wires drivers -> writer (SQLite) -> publisher (MQTT) and runs until SIGTERM.

Start order: config is loaded by the caller; the queue is opened and checked; the writer and
publisher start; devices are opened in the background (an absent device does not block start);
then READY=1. Stop order (SIGTERM, SIGINT): devices stop reading; the writer commits what they
read; the publisher gets up to ``flush_s`` for PUBACKs of what is in flight; the writer commits
those marks; exit. Anything not PUBACKed stays pending in the queue for the next start.

Threads: each owns its part alone and is reached only through its inbox (frozen dataclasses
dispatched with ``match``; docs/reliability.md (g) has this table with more detail). None
polls: each sleeps until its inbox, its socket or its next deadline wakes it::

    main              signals, watchdog, STATUS=, reload     <- signal handlers, notice()
                      (edge_agent.main_thread)                  (state changes; an Event)
    device-<id>       the driver, its port, its capture      <- device actions (call)
                      journal (edge_agent.journal)
    queue-writer      the SQLite write connection            <- captures, events, sent/
                                                                rejected marks, sync, call, stop
    mqtt-publisher    the paho client and its socket         <- wake (eventfd, at most one per
                      (selectors loop), read connection,        turn), alarms, device states;
                      window and lanes                          paho callbacks run in it
    stations          station correlation state              <- committed readings, states
    control-socket    the Unix socket (blocking accept)      <- CLI requests
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from types import FrameType

import structlog

from drivers import driver_class
from edge_agent import commands, instance, logs, sdnotify
from edge_agent.config import AgentConfig, DeviceConfig, check_tls_files
from edge_agent.control import SOCKET_HINT, ControlServer, answering_pid
from edge_agent.journal import Journal, journal_dir
from edge_agent.logs import log_thread_deaths, register_secret
from edge_agent.main_thread import return_big_buffers_to_the_os, serve
from edge_agent.outbox import Outbox
from edge_agent.publisher import Publisher
from edge_agent.reading import Capture, Identity, Reading, boot_id
from edge_agent.remote import wiring as remote_wiring
from edge_agent.station_runner import StationRunner
from edge_agent.status import Rates, agent_status, status_line
from edge_agent.supervisor import DeviceWorker
from edge_agent.topics import Topics
from edge_agent.writer import Writer

log = structlog.get_logger(__name__)


class Daemon:
    """The running agent.

    Args:
        cfg: a validated configuration.
    """

    #: A pipeline thread that has not looped for this long stops the watchdog petting (s).
    HEALTH_WINDOW_S = 1.0
    #: Seconds between STATUS= updates to systemd.
    STATUS_EVERY_S = 10.0

    def __init__(self, cfg: AgentConfig) -> None:
        self.cfg = cfg
        self.stopping = threading.Event()
        #: Wakes the main loop: stop, reload, or a state change for STATUS= (see notice()).
        self.wakeup = threading.Event()
        n = cfg.node
        self.node = Identity(agent=n.agent_id, site=n.site, line=n.line, boot_id=boot_id())
        self.topics = Topics(cfg.mqtt.topic_prefix, n.site, n.line, n.agent_id)
        check_tls_files(cfg.mqtt, cfg.source)
        password = cfg.password()
        if password is not None:
            register_secret(password.get_secret_value())
        q = cfg.queue
        q.path.parent.mkdir(parents=True, exist_ok=True)
        self.outbox = Outbox(q.path, self.node, q.max_bytes, q.retain_sent_hours * 3600)
        # what the last run read and did not commit goes to the writer first (start())
        marks, queue_id = self.outbox.journal_marks(), self.outbox.queue_id
        self.journal, self._recovered = Journal.open(journal_dir(q.path), marks, queue_id)
        self.writer = Writer(self.outbox, self._on_commit, self._on_alarm, q.gather_ms / 1000)
        self.writer.on_change = self.notice
        self.publisher = Publisher(
            cfg.mqtt, self.topics, f"edge-agent-{n.agent_id}", password, q.path, self.writer
        )
        self.publisher.on_change = self.notice
        self.started_mono = time.monotonic()
        self.control: ControlServer | None = None
        self.ready_status = ""  # the STATUS= sent with READY=1
        self.rates = Rates()
        self.stations = self._stations(cfg)
        self.reload_requested = threading.Event()
        self.workers = [
            self.make_worker(dev_id, dev) for dev_id, dev in cfg.devices.items() if dev.enabled
        ]
        self.remote = remote_wiring.attach(self)  # commands, birth/will, oldest_unsent

    def _stations(self, cfg: AgentConfig) -> StationRunner | None:
        if not cfg.stations:
            return None
        from edge_agent.station import Station  # noqa: PLC0415 - only lines with stations
        from edge_agent.waybill import WaybillTable  # noqa: PLC0415

        table = WaybillTable.from_config(cfg.waybills)
        stations = {sid: Station(sid, st, table) for sid, st in cfg.stations.items()}
        quiet = {d for st in cfg.stations.values() if not st.publish_raw for d in st.devices}
        self.outbox.quiet_devices = quiet
        return StationRunner(stations, self.writer.submit_event)

    def make_worker(self, dev_id: str, dev: DeviceConfig) -> DeviceWorker:
        driver = driver_class(dev.type)(dev_id, dev)
        driver.on_reject = self._on_reject
        return DeviceWorker(driver, self._capture, self._device_state)

    def _capture(self, cap: Capture) -> bool:
        """A device thread's capture: journaled (a crash cannot lose it), then queued."""
        return self.writer.submit(self.journal.append(cap))

    def _device_state(self, device: str, state: str, reason: str) -> None:
        self.notice()
        self.publisher.device_state(device, state, reason)
        if self.stations is not None:
            self.stations.device_state(device, state)

    def _on_commit(self, accepted: list[tuple[int, Reading]]) -> None:
        self.journal.committed(self.outbox.last_marks)
        self.publisher.wake(accepted[0][0] if accepted else None, prio=self.writer.committed_prio)
        if self.stations is not None:
            owned = self.stations.devices()
            for _n, r in accepted:
                if r.device in owned:
                    self.stations.feed(r.to_dict())
        if self.control is not None and self.control.watching:
            for _n, r in accepted:
                self.control.publish({"event": "reading", **r.to_dict()})
        if logs.LEVEL.debug:
            for _n, r in accepted[-3:]:
                log.debug("reading_committed", device=r.device, seq=r.seq, id=r.id)

    def _on_alarm(self, name: str, details: dict[str, object]) -> None:
        self.notice()
        self.publisher.alarm(name, details)

    def _on_reject(self, device: str, reason: str, frame: bytes) -> None:
        if self.control is not None and self.control.watching:
            self.control.publish(
                {"event": "reject", "device": device, "reason": reason, "raw": frame.hex()}
            )

    def _start_control(self) -> None:
        cfg = self.cfg.control
        if not cfg.enabled:
            return
        handlers = commands.handlers(self.status, lambda: self.workers, self.writer)
        server = ControlServer(cfg.path(), handlers, cfg.group)
        try:
            server.bind()
        except (OSError, KeyError, instance.AlreadyRunningError) as err:
            log.error("control_socket_unavailable", path=str(cfg.path()), error=str(err))
            return
        server.start()
        self.control = server

    def start(self) -> None:
        """Start every thread, then tell systemd we are ready."""
        self.writer.start()
        for cap in self._recovered:
            self.writer.submit(cap)
        self._recovered = []
        self.remote.start()
        self.publisher.start()
        if self.stations is not None:
            self.stations.start()
        for w in self.workers:
            w.start()
        self._start_control()
        if self.cfg.metrics.enabled:
            from edge_agent.metrics import serve  # noqa: PLC0415 - only when enabled

            self.publisher.on_ack_latency = serve(self.cfg.metrics.port, self.status)
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
        self.ready_status = self.status_line()  # serve() compares the next ones with it
        sdnotify.notify("READY=1\nSTATUS=" + self.ready_status)

    def status_line(self) -> str:
        """One line for ``systemctl status``: devices, queue depth, broker."""
        return status_line(
            self.workers, self.outbox.counters["pending"], self.publisher, self.writer
        )

    def healthy(self, window: float) -> bool:
        """True while the writer and publisher threads are alive and looping."""
        return (
            self.writer.live.healthy(window)
            and self.publisher.live.healthy(window)
            and (self.stations is None or self.stations.live.healthy(window))
        )

    def notice(self) -> None:
        """Something a technician should see changed (broker, disk, a device): STATUS= now."""
        self.wakeup.set()

    def serve(self) -> None:
        """Block until stop is requested (:func:`edge_agent.main_thread.serve`)."""
        serve(self)

    def status(self) -> dict[str, object]:
        """Everything ``edge-agent status`` shows (see README "Control socket")."""
        return agent_status(self)

    def stop(self) -> None:
        """Flush and stop, within about 2 s."""
        sdnotify.notify("STOPPING=1")
        t0 = time.monotonic()
        if self.control is not None:
            self.control.close()
        for w in self.workers:
            w.stop()
        for w in self.workers:
            w.join(0.5)
        if self.stations is not None:
            self.stations.stop()
        self.writer.sync(timeout=1.0)
        self.publisher.stop(timeout=1.5)
        self.remote.stop()
        self.writer.stop(timeout=1.0)
        if self.writer.is_alive():
            # never close the connection under a running commit; the process exit ends it,
            # and SQLite rolls back what was not committed (those readings were not accepted)
            log.error("stopped_with_writer_busy", waiting=self.writer.waiting())
        else:
            self.outbox.close()
        self.journal.close()
        log.info("stopped", seconds=round(time.monotonic() - t0, 3), **self.outbox.counters)

    def reload(self) -> None:
        """SIGHUP: re-read the config; add, remove and restart changed devices in place
        (:func:`edge_agent.reload.reload_devices`)."""
        from edge_agent.reload import reload_devices  # noqa: PLC0415 - only on SIGHUP

        reload_devices(self)

    def request_reload(self, _signum: int, _frame: FrameType | None) -> None:
        """Signal handler: SIGHUP (the work is done by the main loop, not in the handler)."""
        self.ask_reload()

    def ask_reload(self) -> None:
        """Reload in the main loop, woken now (SIGHUP, the remote ``reload`` command)."""
        self.reload_requested.set()
        self.wakeup.set()

    def request_stop(self, signum: int, _frame: FrameType | None) -> None:
        """Signal handler: SIGTERM / SIGINT."""
        log.info("stop_requested", signal=signal.Signals(signum).name)
        self.stopping.set()
        self.wakeup.set()


def run(cfg: AgentConfig) -> int:
    """Run the daemon until SIGTERM/SIGINT. Returns the exit code.

    Raises :class:`~edge_agent.instance.AlreadyRunningError` (exit ``EX_LOCKED``) before touching
    the queue or the network when another daemon holds this queue or answers on this control
    socket.
    """
    return_big_buffers_to_the_os()
    log_thread_deaths()  # a thread's last exception is one JSON line, not a bare traceback
    lock = instance.acquire(cfg.queue.path)  # before the queue is opened or anything connects
    try:
        if cfg.control.enabled:
            pid = answering_pid(cfg.control.path())
            if pid is not None:
                raise instance.AlreadyRunningError(cfg.control.path(), pid, SOCKET_HINT)
        daemon = Daemon(cfg)
        signal.signal(signal.SIGTERM, daemon.request_stop)
        signal.signal(signal.SIGINT, daemon.request_stop)
        signal.signal(signal.SIGHUP, daemon.request_reload)
        daemon.start()
        try:
            daemon.serve()
        finally:
            daemon.stop()
    finally:
        lock.release()
    return 0
