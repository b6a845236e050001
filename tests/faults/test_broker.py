"""T3 and T4: the broker restarted gracefully and killed with -9 mid-stream; the guard test.

docs/reliability.md (c). The agent keeps committing while the broker is away and publishes the
backlog when it is back; the backend (a persistent MQTT 5 session) must get every reading.
The broker is configured for durability (B1, B2): without ``autosave_on_changes`` a
``kill -9`` loses every message it had PUBACKed but not yet delivered, which the guard test
below pins down.
"""

from __future__ import annotations

import re
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from simulators.mosquitto import Mosquitto
from tests.harness import Subscriber, agent_config
from tests.ledger import check, scanner_emitted
from tests.test_e2e import scanner_device

pytestmark = pytest.mark.faults

Factory = Callable[..., Any]


def test_t4_guard_fixture_broker_is_configured_for_durability(tmp_path: Path) -> None:
    """The fixture broker keeps PUBACKed messages across kill -9 and for offline backends."""
    conf = Mosquitto(tmp_path / "b").conf.read_text()
    settings = {
        m[1]: m[2]
        for line in conf.splitlines()
        if line.strip() and not line.startswith("#") and (m := re.match(r"(\S+)\s+(.*)", line))
    }
    assert settings["persistence"] == "true"
    assert settings["autosave_on_changes"] == "true"
    assert settings["autosave_interval"] == "1"
    assert settings["max_queued_messages"] == "0"
    assert settings["persistence_location"].startswith(str(tmp_path))


def pending(db: Path) -> int:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(con.execute("SELECT count(*) FROM outbox WHERE sent_ns IS NULL").fetchone()[0])
    finally:
        con.close()


def first_sent_after(db: Path, t: float) -> float | None:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        ns = con.execute(
            "SELECT min(sent_ns) FROM outbox WHERE sent_ns > ?", (int(t * 1e9),)
        ).fetchone()[0]
    finally:
        con.close()
    return None if ns is None else ns / 1e9


@pytest.mark.parametrize(
    "sig", [signal.SIGTERM, signal.SIGKILL], ids=["t3-graceful-restart", "t4-kill-9"]
)
def test_broker_down_3s_at_10_per_s(
    tmp_path: Path,
    broker: Mosquitto,
    backend: Subscriber,
    scanner: Factory,
    agent_factory: Factory,
    sig: int,
) -> None:
    """3 s without a broker at 10 readings/s: nothing lost, the queue drains in seconds.

    First PUBACK <= 5 s after the broker is back (the agent's first row marked sent), queue
    depth <= 5 within 10 s.
    """
    sim = scanner("scan", rate=10, seed=71)
    agent = agent_factory(agent_config(tmp_path, broker.port, {"scan_1": scanner_device(sim)}))
    db = tmp_path / "state" / "queue.db"
    agent.start()
    sim.start(count=0)
    time.sleep(2.0)
    broker.stop(sig)
    time.sleep(3.0)
    depth_down = pending(db)
    broker.start()
    t_back = time.time()
    puback: float | None = None
    drained: float | None = None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (puback is None or drained is None):
        puback = puback or first_sent_after(db, t_back)
        if puback is not None and drained is None and pending(db) <= 5:
            drained = time.time()
        time.sleep(0.05)
    time.sleep(1.0)
    sim.stop()
    assert backend.wait_for(
        lambda: len({r["id"] for _, r in backend.readings()}) >= len(scanner_emitted("s", sim)),
        15,
    )
    agent.stop()
    fig = check(
        f"T{3 if sig == signal.SIGTERM else 4} broker {signal.Signals(sig).name}, 3 s down",
        backend,
        db,
        emitted=scanner_emitted("scan_1", sim),
        max_dup_ratio=1.0,  # asserted below
        depth_while_down=depth_down,
        first_puback_s=None if puback is None else round(puback - t_back, 3),
        depth_le_5_after_s=None if drained is None else round(drained - t_back, 3),
    )
    assert depth_down >= 25, depth_down  # the readings of the outage waited in the queue
    assert puback is not None and puback - t_back <= 5.0, fig.extra
    assert drained is not None and drained - t_back <= 10.0, fig.extra
    assert fig.emitted == fig.emitted_received >= 50
    # docs/reliability.md's dup_ratio <= 0.01 comes from a long run (1 in 2,000). Over this 7 s run
    # of ~70 readings one re-sent in-flight message is already 1.4 %: allow that one, no more.
    assert fig.duplicates <= max(1, int(0.01 * fig.unique)), fig
