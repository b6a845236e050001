"""remote-ops wiring: what the daemon attaches for issue 14, in one place (so that
:mod:`edge_agent.daemon` only gains a few marked lines).

* the ``status.v1`` birth/will payloads (:mod:`edge_agent.birth`) handed to the publisher;
* the ``oldest_unsent`` watch (checked by the daemon's main loop);
* the command server (``[remote] enabled``) subscribed through the publisher's seams.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge_agent import commands
from edge_agent.birth import Birth, config_digest
from edge_agent.remote.server import CommandServer
from edge_agent.remote.unsent import UnsentWatch

if TYPE_CHECKING:
    from edge_agent.daemon import Daemon


def attach(d: Daemon) -> tuple[CommandServer | None, UnsentWatch]:
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
        return None, unsent
    server = CommandServer(
        r,
        d.topics,
        cfg.queue.path,
        d.publisher,
        cfg.mqtt.batch_max,
        d.status,
        d.reload_requested.set,
        lambda req: commands.device_action(d.workers, req),
    )
    d.publisher.on_command = server.on_message
    return server, unsent
