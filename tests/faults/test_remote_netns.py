"""Issue 14: the will after a cut link (network namespace, packets dropped both ways).

The broker publishes the agent's will (``status.v1`` ``offline``) once the silent link outlives
1.5 x the keepalive; after the link heals the agent is ``online`` again with the same
``started_at`` and ``boot_id``: the backend tells a network cut from a crash (new
``started_at``) and from a clean stop (``offline-clean``, tests/test_remote.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from simulators.mosquitto import Mosquitto
from tests.faults.test_network import (  # noqa: F401 - fixtures
    NetnsAgent,
    netns,
    ns_backend,
    ns_broker,
)
from tests.harness import Subscriber, agent_config, schema_validator
from tests.netns import Netns

pytestmark = pytest.mark.faults

Factory = Callable[..., Any]


def test_will_after_a_cut_link_then_online_with_the_same_start(
    tmp_path: Path,
    netns: Netns,  # noqa: F811
    ns_broker: Mosquitto,  # noqa: F811
    ns_backend: Subscriber,  # noqa: F811
) -> None:
    backend = ns_backend
    cfg = agent_config(tmp_path, ns_broker.port, {}, extra="keepalive = 5")
    cfg.write_text(cfg.read_text().replace('"127.0.0.1"', f'"{netns.host_addr}"'))
    agent = NetnsAgent(cfg, tmp_path, netns)
    validators = schema_validator()
    try:
        agent.start()
        assert backend.wait_for(lambda: backend.states()[-1:] == ["online"], 10), agent.log_text()
        netns.drop()
        # the broker gives up on the silent link after 1.5 x keepalive (7.5 s) and sends the will
        assert backend.wait_for(lambda: backend.states()[-1:] == ["offline"], 15), backend.states()
        netns.heal()
        assert backend.wait_for(lambda: backend.states()[-1:] == ["online"], 20), backend.states()
        # QoS 1 is at least once: a status the broker delivers again (the backend's own link
        # was cut too; seen under load: the first birth again after the last) counts once
        docs = [json.loads(p) for p in dict.fromkeys(backend.payloads("/status"))]
        for d in docs:
            validators["status.v1.json"].validate(d)
        before, will, after = docs[-3:]
        states = [d["state"] for d in (before, will, after)]
        assert states == ["online", "offline", "online"], json.dumps(docs)
        assert before["started_at"] == will["started_at"] == after["started_at"]
        assert before["boot_id"] == after["boot_id"]
        assert agent.proc is not None and agent.proc.poll() is None
    finally:
        agent.stop()
