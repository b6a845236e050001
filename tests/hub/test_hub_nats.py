"""A 3-node NATS cluster (MQTT 3.1.1 listener, sessions and messages in JetStream with 3
replicas) between the agent and the hub: kill -9 the node the agent is connected to in the
middle of the stream; every committed reading still reaches PostgreSQL exactly once.

NATS's MQTT has no shared subscriptions, so the hub runs as one instance there
(``shared = false``); docs/hub.md says why and what changes for other clusters. The hub lists
the nodes starting from the second, the agent from the first: with nats-server 2.9.10, when
the hub's own node died too, its restored session's JetStream consumers kept the messages but
never delivered them (2 runs of 2; docs/hub.md, "Broker clusters").
"""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from simulators import nats
from simulators.postgres import Postgres
from tests.harness import agent_config, queue_rows
from tests.hub.conftest import HubProc, hub_config, query, wait_until
from tests.hub.test_hub_e2e import assert_exactly_once
from tests.test_e2e import scanner_device


@pytest.fixture
def cluster(tmp_path: Path) -> Any:
    if nats.binary() is None:
        pytest.skip("nats-server not installed (apt-get install nats-server)")
    c = nats.NatsCluster(tmp_path / "nats")
    c.start()
    yield c
    c.stop()


@pytest.mark.slow
def test_node_killed_mid_stream_every_reading_exactly_once(
    tmp_path: Path,
    cluster: nats.NatsCluster,
    postgres: Postgres,
    scanner: Callable[..., Any],
    agent_factory: Callable[..., Any],
    hub_factory: Callable[[Path], HubProc],
) -> None:
    ports = cluster.mqtt_ports
    hub = hub_factory(
        hub_config(
            tmp_path,
            "h1",
            [*ports[1:], ports[0]],
            postgres.dsn,
            mqtt_extra='protocol = "3.1.1"\nshared = false\nresubscribe = false',
        )
    )
    hub.start()
    sim = scanner("tunnel", framing="stx_etx", rate=120, seed=11, scanner_no=1)
    cfg = agent_config(tmp_path, ports[0], {"tunnel_1": scanner_device(sim)})
    brokers = ", ".join(f'{{ host = "127.0.0.1", port = {p} }}' for p in ports)
    text = re.sub(r"brokers = \[.*\]", f"brokers = [{brokers}]", cfg.read_text())
    cfg.write_text(text.replace("[mqtt]\n", '[mqtt]\nprotocol = "3.1.1"\nfailover_after = 1\n'))
    agent = agent_factory(cfg)
    agent.start()
    sim.start(count=1200)
    dsn = postgres.dsn

    def count() -> int:
        return int(query(dsn, "SELECT count(*) FROM readings")[0][0])

    assert wait_until(lambda: count() > 200, 30), count()
    node = cluster.node_of("edge-agent-test-agent")
    assert node is not None
    node.stop(signal.SIGKILL)
    n = count()
    if not wait_until(lambda: count() > n + 200, 40):
        for nd in cluster.nodes:  # JetStream's view of the sessions' consumers, for the report
            if nd is not node:
                (tmp_path / f"jsz-{nd.name}.json").write_text(json.dumps(nd.jsz()))
        raise AssertionError((count(), n, node.name))
    assert cluster.node_of("edge-agent-test-agent") not in (None, node)
    sim.wait(30)
    queue_db = tmp_path / "state" / "queue.db"
    assert wait_until(lambda: count() >= len(queue_rows(queue_db)), 40)
    time.sleep(1.0)
    agent.stop()
    assert wait_until(lambda: count() >= len(queue_rows(queue_db)), 20)
    assert assert_exactly_once(dsn, queue_db) >= 1000
