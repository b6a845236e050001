"""SIGHUP: re-read the configuration and apply what can be applied without a restart.

The queue, the writer and the publisher keep running, so nothing queued is touched. Devices
are added, removed and restarted in place; changes outside ``[devices]`` (broker, queue,
identity) need a restart and are only reported; a config that does not validate is rejected
and the running one kept. Runs in the daemon's main thread.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

from edge_agent import sdnotify
from edge_agent.config import load_config
from edge_agent.errors import ConfigError

if TYPE_CHECKING:
    from edge_agent.daemon import Daemon

log = structlog.get_logger("edge_agent.daemon")


def reload_devices(daemon: Daemon) -> None:
    """SIGHUP: re-read the config; add, remove and restart changed devices in place.

    The queue, the writer and the publisher keep running, so nothing queued is touched.
    Changes outside ``[devices]`` (broker, queue, identity) need a restart and are only
    reported; a config that does not validate is rejected and the running one kept.
    """
    sdnotify.notify("RELOADING=1")
    try:
        new = load_config(daemon.cfg.source)
    except ConfigError as err:
        log.error("reload_rejected", error=str(err))
        sdnotify.notify("READY=1")
        return
    old_devices = daemon.cfg.devices
    changed = [
        k
        for k in ("node", "mqtt", "queue", "control", "metrics", "remote")
        if getattr(new, k) != getattr(daemon.cfg, k)
    ]
    if changed:
        log.warning("reload_needs_restart", sections=changed)
    running = {w.driver.device_id: w for w in daemon.workers}
    wanted = {d: c for d, c in new.devices.items() if c.enabled}
    for dev_id, w in running.items():
        if wanted.get(dev_id) != old_devices.get(dev_id):
            w.stop()
            w.join(2.0)
            w.driver.retire()  # a listen:// port is free again (or re-bound by its new worker)
            daemon.workers.remove(w)
            daemon.rates.forget(dev_id)  # a new worker counts from 0: no negative rate
    for dev_id, dev in wanted.items():
        if dev_id not in running or dev != old_devices.get(dev_id):
            w = daemon.make_worker(dev_id, dev)
            daemon.workers.append(w)
            w.start()
    # status lists the devices as the file does; an unchanged one keeps its worker (and
    # with it its counters and last reading)
    order = list(wanted)
    daemon.workers = sorted(daemon.workers, key=lambda w: order.index(w.driver.device_id))
    daemon.cfg = daemon.cfg.model_copy(update={"devices": new.devices})
    log.info("reloaded", devices=sorted(wanted), needs_restart=changed)
    sdnotify.notify("READY=1\nSTATUS=" + daemon.status_line())
