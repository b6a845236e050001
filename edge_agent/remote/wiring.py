"""remote-ops wiring: what the daemon attaches for issue 14, in one place (so that
:mod:`edge_agent.daemon` only gains a few marked lines).

* the ``status.v1`` birth/will payloads (:mod:`edge_agent.birth`) handed to the publisher;
* the ``oldest_unsent`` watch (checked on a timer of the daemon's main loop,
  :mod:`edge_agent.main_thread`);
* the command server (``[remote] enabled``) subscribed through the publisher's seams
  (:mod:`edge_agent.publisher_remote`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from edge_agent import commands
from edge_agent.birth import Birth, config_digest
from edge_agent.remote.server import CommandServer
from edge_agent.remote.unsent import UnsentWatch

if TYPE_CHECKING:
    from edge_agent.daemon import Daemon


@dataclass(slots=True)
class Remote:
    """The remote parts of one daemon: the command server (None: ``[remote] enabled = false``)
    and the ``oldest_unsent`` watch."""

    server: CommandServer | None
    unsent: UnsentWatch

    def start(self) -> None:
        """Start the command thread (before the publisher connects and subscribes)."""
        if self.server is not None:
            self.server.start()

    def stop(self) -> None:
        """After the publisher stopped: end the command thread, close the watch."""
        if self.server is not None:
            self.server.stop()
        self.unsent.close()

    def status(self) -> dict[str, object]:
        """The ``remote`` and ``unsent`` parts of ``edge-agent status``."""
        server = None if self.server is None else self.server.status()
        return {"remote": server, "unsent": self.unsent.status()}


def attach(d: Daemon) -> Remote:
    """Build the remote parts for daemon ``d`` (not started) and hook them to its publisher."""
    cfg = d.cfg
    r = cfg.remote
    unsent = UnsentWatch(
        cfg.queue.path, r.alarm_oldest_unsent_s, r.alarm_oldest_exception_s, d.publisher.alarm
    )
    birth = Birth(
        d.node,
        config_digest(cfg),
        lambda: (d.outbox.counters["pending"], unsent.oldest_s),
        lambda: [
            {"id": w.driver.device_id, "type": w.driver.kind, "state": w.state}
            for w in list(d.workers)
        ],
    )
    d.publisher.birth = birth.payload
    if not r.enabled:
        return Remote(None, unsent)
    server = CommandServer(
        r,
        d.topics,
        cfg.queue.path,
        d.publisher,
        cfg.mqtt.batch_max,
        d.status,
        d.ask_reload,  # wakes the main loop (the flag alone waited for its next timer)
        lambda req: commands.device_action(d.workers, req),
    )
    d.publisher.on_command = server.on_message
    return Remote(server, unsent)
