"""T17 / D11: the broker's ACL denies the agent's reading topics (MQTT v5 PUBACK 0x87).

Moved here from tests/test_publisher.py and extended. A real Mosquitto with a password file and
an ACL letting the agent write only its status, alarm and device-state topics. Ten readings:
each row must reach the ``rejected`` state with code 0x87 and its reason, the alarm must reach
the backend within 1 s of the rejection, the rows must be retried no more often than
``reject_retry_s`` (1/min by default; shortened here so the test can watch three intervals),
counted on both ends (the queue's ``attempts`` and the broker's "Denied PUBLISH" log lines),
and the agent must not crash. Then the ACL is fixed on the broker (SIGHUP, no agent restart)
and the next retry delivers every row: the ledger balances.

Mosquitto 2.0 closes the connection after answering a denied QoS 1 PUBLISH with 0x87
(eclipse-mosquitto/mosquitto#2579), so each denied message also costs a reconnect. A close
with our next messages unread behind the denied one is a reset that loses the 0x87; paho then
re-sends that message at the next CONNACK, and the publisher sends nothing behind it until it
is answered (docs/reliability.md B5). Without that rule this test failed 1 run in 10 to 16:
the same message re-sent at every reconnect, its rows never rejected.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import pwd
import re
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edge_agent.config import MqttConfig
from simulators.mosquitto import Mosquitto
from tests import ledger
from tests.harness import Subscriber, agent_config
from tests.test_e2e import received, scanner_device

pytestmark = pytest.mark.faults

Factory = Callable[..., Any]
BASE = "edge/v1/T1/L1/test-agent"
READINGS = 10
#: The retry interval in this test; production keeps the default (asserted below).
RETRY_S = 1.5
#: How long the rejected rows are watched for retries.
WATCH_S = 3 * RETRY_S + 0.3


def _acl(path: Path, *, readings_allowed: bool) -> None:
    allowed = ["status", "alarm", "device/#"] + (["reading/#", "batch"] if readings_allowed else [])
    agent = "".join(f"topic write {BASE}/{t}\n" for t in allowed)
    path.write_text(f"user agent\n{agent}\nuser backend\ntopic read edge/#\n")
    if os.geteuid() == 0:  # mosquitto runs as its own user and re-reads the file on SIGHUP
        user = pwd.getpwnam("mosquitto")
        os.chown(path, user.pw_uid, user.pw_gid)


def _rows(db: Path) -> list[tuple[Any, ...]]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return con.execute(
            "SELECT sent_ns, reject_rc, reject_reason, attempts FROM outbox ORDER BY n"
        ).fetchall()
    finally:
        con.close()


def _wall(event: dict[str, Any]) -> float:
    return dt.datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00")).timestamp()


def _denied(broker: Mosquitto) -> list[str]:
    """The broker's "Denied PUBLISH" lines for the agent's reading/batch topics."""
    text = (broker.dir / "mosquitto.log").read_text()
    return re.findall(r"Denied PUBLISH from edge-agent-test-agent \((d\d), .*'(\S+)'", text)


def test_acl_denied_rows_are_rejected_alarmed_retried_slowly_then_delivered(
    tmp_path: Path, scanner: Factory, agent_factory: Factory
) -> None:
    assert MqttConfig.model_validate({"brokers": [{"host": "h"}]}).reject_retry_s == 60.0
    bdir = tmp_path / "broker"
    bdir.mkdir()
    pw = bdir / "passwd"
    for user, word in (("agent", "agent-pw"), ("backend", "backend-pw")):
        subprocess.run(
            ["mosquitto_passwd", "-b", *(["-c"] if not pw.exists() else []), str(pw), user, word],
            check=True,
        )  # fmt: skip
    acl = bdir / "acl"
    _acl(acl, readings_allowed=False)
    extra = f"password_file {pw}\nacl_file {acl}\nlog_type debug\n"
    broker = Mosquitto(bdir, extra=extra, anonymous=False)
    broker.start()
    backend = Subscriber(broker.port, auth=("backend", "backend-pw"))
    secret = tmp_path / "agent.pw"
    secret.write_text("agent-pw\n")
    secret.chmod(0o600)
    sim = scanner("scan", rate=50, seed=22)
    mqtt = f'username = "agent"\npassword_file = "{secret}"\nreject_retry_s = {RETRY_S}'
    cfg = agent_config(tmp_path, broker.port, {"s1": scanner_device(sim)}, mqtt)
    agent = agent_factory(cfg)
    db = tmp_path / "state" / "queue.db"
    try:
        agent.start()
        sim.start(count=READINGS)
        assert backend.wait_for(lambda: len(backend.payloads("/alarm")) >= 1, 10), agent.log_text()
        t_alarm_seen = time.time()  # polled every 50 ms
        # every row rejected with 0x87 and its reason, none sent
        assert backend.wait_for(
            lambda: len(_rows(db)) == READINGS and all(r[1] for r in _rows(db)), 10
        ), agent.log_text()
        t_all_rejected = time.monotonic()
        rows = _rows(db)
        assert all(r[0] is None and r[1] == 0x87 and r[2] == "Not authorized" for r in rows), rows
        # the alarm reached the backend within 1 s of the first rejection
        first = json.loads(backend.payloads("/alarm")[0])
        assert first["alarm"] == "publish_rejected" and first["code"] == 0x87, first
        rejected = [e for e in agent.events() if e["event"] == "mqtt_publish_rejected"]
        alarm_latency = t_alarm_seen - _wall(rejected[0])
        assert alarm_latency <= 1.0, f"alarm at the backend {alarm_latency:.3f} s after the 0x87"

        # watch the retries: once per RETRY_S, never a hot loop; the agent keeps running
        time.sleep(max(0.0, WATCH_S - (time.monotonic() - t_all_rejected)))
        assert agent.proc is not None and agent.proc.poll() is None, agent.log_text()
        attempts = [r[3] for r in _rows(db)]
        watched = time.monotonic() - t_all_rejected
        max_attempts = 1 + int(watched / RETRY_S) + 1  # the first try, retries, one in flight
        assert max(attempts) <= max_attempts, f"attempts {attempts} in {watched:.1f} s"
        assert min(attempts) >= 2, f"rejected rows were not retried: {attempts}"
        denied = _denied(broker)
        fresh = [d for d in denied if d[0] == "d0"]
        # each of our sends is one PUBLISH the broker denied; paho's re-sends after the
        # broker's disconnect are DUP (d1); together no more than the rows' attempts
        assert len(fresh) <= sum(attempts), (denied, attempts)
        assert len(denied) <= 2 * sum(attempts), denied
        retry_per_min = 60 * (max(attempts) - 1) / watched
        assert received(backend, "s1") == []

        # fix the ACL on the broker; the next retry delivers every row, no restart
        _acl(acl, readings_allowed=True)
        assert broker.proc is not None
        broker.proc.send_signal(signal.SIGHUP)
        t_fix = time.monotonic()
        assert backend.wait_for(lambda: len(received(backend, "s1")) >= READINGS, 3 * RETRY_S + 5)
        drained = time.monotonic() - t_fix
        sim.wait(1)
        agent.stop()
        emitted = [ledger.Emitted("s1", t.value, t.t) for t in sim.truth if t.delivered]
        assert len(emitted) == READINGS
        ledger.check(
            "T17 acl_denied",
            backend,
            db,
            emitted=emitted,
            max_dup_ratio=0.0,
            alarm_latency_s=round(alarm_latency, 3),
            attempts_per_row=attempts,
            retry_per_row_per_min_at_retry_s=round(retry_per_min, 1),
            denied_publishes=len(denied),
            drained_after_fix_s=round(drained, 2),
        )
        assert "agent-pw" not in agent.log_text()
    finally:
        agent.stop()
        backend.close()
        broker.stop()
