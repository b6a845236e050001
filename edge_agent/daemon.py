"""The daemon: wires drivers -> writer (SQLite) -> publisher (MQTT) and runs until SIGTERM.

Start order: config is loaded by the caller; the queue is opened and checked; the writer and
publisher start; devices are opened in the background (an absent device does not block start);
then READY=1. Stop order (SIGTERM, SIGINT): devices stop reading; the writer commits what they
read; the publisher gets up to ``flush_s`` for PUBACKs of what is in flight; the writer commits
those marks; exit. Anything not PUBACKed stays pending in the queue for the next start.

Threads: each owns its part alone and is reached only through its inbox (frozen dataclasses
dispatched with ``match``; docs/reliability.md (g) has this table with more detail)::

    main              signals, watchdog, STATUS=, reload     <- signal handlers (events)
    device-<id>       the driver and its port                <- device actions (call)
    queue-writer      the SQLite write connection            <- captures, events, sent/
                                                                rejected marks, sync, call, stop
    mqtt-publisher    paho calls, read connection, window    <- wake, paho callbacks, alarms,
                                                                device states
    mqtt-network      paho's loop_forever (socket)           -> posts to mqtt-publisher only
    stations          station correlation state              <- committed readings, states
    control-socket    the Unix socket                        <- CLI requests
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import socket
import threading
import time
from types import FrameType

import structlog

from drivers import driver_class
from edge_agent import commands, instance, sdnotify
from edge_agent.config import AgentConfig, DeviceConfig, check_tls_files, load_config
from edge_agent.control import SOCKET_HINT, ControlServer, answering_pid
from edge_agent.errors import ConfigError
from edge_agent.logs import log_thread_deaths, register_secret
from edge_agent.outbox import Outbox
from edge_agent.publisher import Publisher
from edge_agent.reading import Identity, Reading, boot_id
from edge_agent.remote import wiring as remote_wiring
from edge_agent.station_runner import StationRunner
from edge_agent.status import Rates, device_status, queue_status, station_status
from edge_agent.supervisor import DeviceWorker
from edge_agent.topics import Topics
from edge_agent.writer import Writer

log = structlog.get_logger(__name__)

_QUEUE_FIGURE = re.compile(r"queue \d+ pending")


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
        self.writer = Writer(self.outbox, self._on_commit, self._on_alarm)
        self.publisher = Publisher(
            cfg.mqtt, self.topics, f"edge-agent-{n.agent_id}", password, q.path, self.writer
        )
        self.started_mono = time.monotonic()
        self.control: ControlServer | None = None
        self.rates = Rates()
        self.stations = self._stations(cfg)
        self.reload_requested = threading.Event()
        self.workers = [
            self._worker(dev_id, dev) for dev_id, dev in cfg.devices.items() if dev.enabled
        ]
        self.remote, self.unsent = remote_wiring.attach(self)  # remote-ops (issue 14)

    def _stations(self, cfg: AgentConfig) -> StationRunner | None:
        if not cfg.stations:
            return None
        from edge_agent.station import Station  # noqa: PLC0415 - only lines with stations
        from edge_agent.waybill import WaybillTable  # noqa: PLC0415

        table = WaybillTable.from_config(cfg.waybills)
        runner = StationRunner(
            {sid: Station(sid, st, table) for sid, st in cfg.stations.items()},
            self.writer.submit_event,
        )
        self.outbox.quiet_devices = {
            d for st in cfg.stations.values() if not st.publish_raw for d in st.devices
        }
        return runner

    def _worker(self, dev_id: str, dev: DeviceConfig) -> DeviceWorker:
        driver = driver_class(dev.type)(dev_id, dev)
        driver.on_reject = self._on_reject
        return DeviceWorker(driver, self.writer.submit, self._device_state)

    def _device_state(self, device: str, state: str, reason: str) -> None:
        self.publisher.device_state(device, state, reason)
        if self.stations is not None:
            self.stations.device_state(device, state)

    def _on_commit(self, accepted: list[tuple[int, Reading]]) -> None:
        self.publisher.wake(accepted[0][0] if accepted else None)
        if self.stations is not None:
            owned = self.stations.devices()
            for _n, r in accepted:
                if r.device in owned:
                    self.stations.feed(r.to_dict())
        if self.control is not None and self.control.watching:
            for _n, r in accepted:
                self.control.publish({"event": "reading", **r.to_dict()})
        for _n, r in accepted[-3:] if len(accepted) > 3 else accepted:
            log.debug("reading_committed", device=r.device, seq=r.seq, id=r.id)

    def _on_alarm(self, name: str, details: dict[str, object]) -> None:
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
        if self.remote is not None:
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
        sdnotify.notify("READY=1\nSTATUS=" + self.status_line())

    def status_line(self) -> str:
        """One line for ``systemctl status``: devices, queue depth, broker."""
        up = sum(w.state == "connected" for w in self.workers)
        pub = self.publisher
        broker = "up" if pub.connected else f"down ({pub.last_error or 'connecting'})"
        pending = self.outbox.counters["pending"]
        line = f"devices {up}/{len(self.workers)} up, queue {pending} pending, broker {broker}"
        if self.writer.disk_full:
            line += f", DISK FULL ({self.writer.disk_full})"
        if self.writer.failing:
            line += f", QUEUE WRITE FAILING ({self.writer.failing})"
        return line

    def healthy(self, window: float) -> bool:
        """True while the writer and publisher threads are alive and looping."""
        now = time.monotonic()
        return (
            self.writer.is_alive()
            and self.publisher.is_alive()
            and now - self.writer.last_progress < window
            and now - self.publisher.last_progress < window
            and self.publisher.network_thread_alive()
            and (
                self.stations is None
                or (self.stations.is_alive() and now - self.stations.last_progress < window)
            )
        )

    def serve(self) -> None:
        """Block until stop is requested, pinging the watchdog while the pipeline progresses."""
        ping = sdnotify.watchdog_interval()
        next_status = time.monotonic() + self.STATUS_EVERY_S
        last_status = self.status_line()  # READY=1 carried it
        ping_every = min(ping or 1.0, 1.0)
        next_ping = time.monotonic() + ping_every
        # the loop ticks at 0.5 s so a change of state reaches STATUS= quickly; the watchdog
        # is pinged at its own pace
        while not self.stopping.wait(min(ping_every, 0.5)):
            if self.reload_requested.is_set():
                self.reload_requested.clear()
                self.reload()
            if ping is not None and time.monotonic() >= next_ping:
                next_ping = time.monotonic() + ping_every
                if self.healthy(window=self.HEALTH_WINDOW_S):
                    sdnotify.notify("WATCHDOG=1")
            self.rates.sample(self.workers)
            self.unsent.check()
            line = self.status_line()
            # at once when something changed that a technician should see (the broker went
            # down, the disk filled up), else every STATUS_EVERY_S for the queue figure
            changed = _QUEUE_FIGURE.sub("", line) != _QUEUE_FIGURE.sub("", last_status)
            if changed or time.monotonic() >= next_status:
                next_status = time.monotonic() + self.STATUS_EVERY_S
                last_status = line
                sdnotify.notify("STATUS=" + line)

    def status(self) -> dict[str, object]:
        """Everything ``edge-agent status`` shows (see README "Control socket")."""
        return {
            "agent": self.node.agent,
            "site": self.node.site,
            "line": self.node.line,
            "pid": os.getpid(),
            "uptime_s": round(time.monotonic() - self.started_mono, 1),
            "devices": {w.driver.device_id: device_status(w, self.rates) for w in self.workers},
            "queue": queue_status(self.cfg.queue),
            "broker": self.publisher.status(),
            "stations": station_status(self.stations),
            "remote": None if self.remote is None else self.remote.status(),
            "unsent": self.unsent.status(),
            "summary": self.status_line(),
        }

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
        if self.remote is not None:
            self.remote.stop()
        self.unsent.close()
        self.writer.stop(timeout=1.0)
        if self.writer.is_alive():
            # never close the connection under a running commit; the process exit ends it,
            # and SQLite rolls back what was not committed (those readings were not accepted)
            log.error("stopped_with_writer_busy", waiting=self.writer.waiting())
        else:
            self.outbox.close()
        log.info("stopped", seconds=round(time.monotonic() - t0, 3), **self.outbox.counters)

    def reload(self) -> None:
        """SIGHUP: re-read the config; add, remove and restart changed devices in place.

        The queue, the writer and the publisher keep running, so nothing queued is touched.
        Changes outside ``[devices]`` (broker, queue, identity) need a restart and are only
        reported; a config that does not validate is rejected and the running one kept.
        """
        sdnotify.notify("RELOADING=1")
        try:
            new = load_config(self.cfg.source)
        except ConfigError as err:
            log.error("reload_rejected", error=str(err))
            sdnotify.notify("READY=1")
            return
        old_devices = self.cfg.devices
        changed = [
            k
            for k in ("node", "mqtt", "queue", "control", "metrics", "remote")
            if getattr(new, k) != getattr(self.cfg, k)
        ]
        if changed:
            log.warning("reload_needs_restart", sections=changed)
        running = {w.driver.device_id: w for w in self.workers}
        wanted = {d: c for d, c in new.devices.items() if c.enabled}
        for dev_id, w in running.items():
            if wanted.get(dev_id) != old_devices.get(dev_id):
                w.stop()
                w.join(2.0)
                self.workers.remove(w)
                self.rates.forget(dev_id)  # a new worker counts from 0: no negative rate
        for dev_id, dev in wanted.items():
            if dev_id not in running or dev != old_devices.get(dev_id):
                w = self._worker(dev_id, dev)
                self.workers.append(w)
                w.start()
        # status lists the devices as the file does; an unchanged one keeps its worker (and
        # with it its counters and last reading)
        order = list(wanted)
        self.workers = sorted(self.workers, key=lambda w: order.index(w.driver.device_id))
        self.cfg = self.cfg.model_copy(update={"devices": new.devices})
        log.info("reloaded", devices=sorted(wanted), needs_restart=changed)
        sdnotify.notify("READY=1\nSTATUS=" + self.status_line())

    def request_reload(self, _signum: int, _frame: FrameType | None) -> None:
        """Signal handler: SIGHUP (the work is done by the main loop, not in the handler)."""
        self.reload_requested.set()

    def request_stop(self, signum: int, _frame: FrameType | None) -> None:
        """Signal handler: SIGTERM / SIGINT."""
        log.info("stop_requested", signal=signal.Signals(signum).name)
        self.stopping.set()


def _return_big_buffers_to_the_os() -> None:
    """glibc keeps freed batch payloads (~200 KB) in heap arenas; mmap them instead (RSS)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD: a fixed threshold, no dynamic growth
    except (OSError, AttributeError):
        pass  # not glibc: nothing to tune


def run(cfg: AgentConfig) -> int:
    """Run the daemon until SIGTERM/SIGINT. Returns the exit code.

    Raises :class:`~edge_agent.instance.AlreadyRunningError` (exit ``EX_LOCKED``) before touching
    the queue or the network when another daemon holds this queue or answers on this control
    socket.
    """
    _return_big_buffers_to_the_os()
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
