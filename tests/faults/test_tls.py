"""T18 / D8 / D9: bad TLS or credentials fail clearly, keep reading, and lose nothing once fixed.

One Mosquitto for the module (``require_certificate true`` on its TLS listeners, a password
file, no anonymous clients) with three listeners: the real one (server certificate for
127.0.0.1 from the device CA), one whose certificate names another host, and a plain one for
the backend subscriber only. Each case starts the real agent with one thing wrong and checks
what a technician would see: the ``mqtt_connect_failed`` log line with the reason, ``STATUS=``
on a fake ``NOTIFY_SOCKET`` naming it, the process still running, reconnect attempts no faster
than 0.5 s apart (and backing off), low CPU, and every reading committed meanwhile.
Then the fault is fixed (a restart with the corrected config, or, for the password, on the
broker with SIGHUP, no restart: the connect-failure alarm kept in RAM must then arrive) and the
ledger must balance: 0 lost.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import pwd
import re
import signal
import ssl
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.config import TlsConfig, load_config
from edge_agent.mqtt_client import build_client, tls_context
from edge_agent.reconnect_jitter import FIRST_RETRY_S, RECONNECT_MIN_S
from simulators.mosquitto import Mosquitto, free_ports
from simulators.serial_line_scanner import ScannerSim
from tests import ledger
from tests.harness import ROOT, Agent, Subscriber, agent_config, queue_rows
from tests.test_e2e import scanner_device
from tests.test_systemd import NotifySocket, without_service_env
from tests.tls import make_ca, make_client_cert, make_server_cert

pytestmark = pytest.mark.faults

Factory = Callable[..., Any]
#: Readings the scanner emits while the broker connection is failing (20/s).
READINGS = 24


@dataclass(frozen=True)
class Pki:
    """The module's certificates and broker."""

    broker: Mosquitto
    wrong_host_port: int
    plain_port: int
    passwd: Path
    ca: Path
    other_ca: Path
    cert: Path
    key: Path
    expired_cert: Path
    expired_key: Path
    other_cert: Path
    other_key: Path


def _chown_to_broker(path: Path) -> None:
    """Mosquitto drops to its user and must still read a file rewritten by the test (B4)."""
    if os.geteuid() == 0:
        user = pwd.getpwnam("mosquitto")
        os.chown(path, user.pw_uid, user.pw_gid)


def _passwd(path: Path, user: str, secret: str) -> None:
    create = [] if path.exists() else ["-c"]
    subprocess.run(["mosquitto_passwd", "-b", *create, str(path), user, secret], check=True)
    _chown_to_broker(path)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pki]:
    bdir = tmp_path_factory.mktemp("tls-broker")
    cdir = tmp_path_factory.mktemp("tls-client")
    ca, ca_key, ca_cert = make_ca(bdir, "device-ca")
    srv, srv_key = make_server_cert(bdir, ca_key, ca_cert, "127.0.0.1")
    wrong, wrong_key = make_server_cert(
        bdir, ca_key, ca_cert, "127.0.0.1", stem="wrong-host", hostname="broker.elsewhere.example"
    )
    other_ca, other_key, other_cert = make_ca(cdir, "other-ca")
    cert, key = make_client_cert(cdir, ca_key, ca_cert, "test-agent")
    exp_cert, exp_key = make_client_cert(cdir, ca_key, ca_cert, "test-agent", stem="expired",
                                         expired=True)  # fmt: skip
    stranger, stranger_key = make_client_cert(cdir, other_key, other_cert, "stranger")
    passwd = bdir / "passwd"
    for user, secret in (("agent", "agent-pw"), ("agent2", "agent2-pw"), ("backend", "be-pw")):
        _passwd(passwd, user, secret)
    main_port, wrong_port, plain_port = free_ports(3)
    tls = "require_certificate true\n"
    extra = (
        f"password_file {passwd}\n"
        f"cafile {ca}\ncertfile {srv}\nkeyfile {srv_key}\n{tls}"
        f"listener {wrong_port} 127.0.0.1\n"
        f"cafile {ca}\ncertfile {wrong}\nkeyfile {wrong_key}\n{tls}"
        f"listener {plain_port} 127.0.0.1\n"
    )
    broker = Mosquitto(bdir, port=main_port, extra=extra, anonymous=False)
    broker.start()
    yield Pki(broker, wrong_port, plain_port, passwd, ca, other_ca, cert, key, exp_cert, exp_key,
              stranger, stranger_key)  # fmt: skip
    broker.stop()


@dataclass(frozen=True)
class Case:
    """One thing wrong, what the agent must say about it, and how it is fixed."""

    name: str
    reason: str  # a regex the reason (log, STATUS=, alarm) must match
    fix: str  # "restart" (corrected config) or "broker" (password changed, SIGHUP)


VERIFY = r"^TLS \[SSL: CERTIFICATE_VERIFY_FAILED\] certificate verify failed: "
CASES = [
    Case("wrong_ca", VERIFY + "self-signed certificate in certificate chain", "restart"),
    Case("expired_cert", r"^TLS \[SSL: SSLV3_ALERT_CERTIFICATE_EXPIRED\]", "restart"),
    Case("wrong_hostname", VERIFY + "IP address mismatch", "restart"),
    Case("wrong_password", r"^CONNACK 0x8[67] (Bad user name or password|Not authorized)",
         "broker"),
]  # fmt: skip


def _config(tmp: Path, pki: Pki, sim: ScannerSim, case: str, *, fixed: bool) -> Path:
    """The agent's config for ``case``: broken, or as it should be."""
    port = pki.wrong_host_port if case == "wrong_hostname" and not fixed else pki.broker.port
    ca = pki.other_ca if case == "wrong_ca" and not fixed else pki.ca
    cert, key = (pki.cert, pki.key)
    if case == "expired_cert" and not fixed:
        cert, key = pki.expired_cert, pki.expired_key
    user = "agent2" if case == "wrong_password" else "agent"
    secret = tmp / "mqtt.pw"
    secret.write_text("stale-pw\n" if case == "wrong_password" else "agent-pw\n")
    secret.chmod(0o600)
    mqtt_extra = (
        f'username = "{user}"\npassword_file = "{secret}"\n'
        f'[mqtt.tls]\nca_file = "{ca}"\ncert_file = "{cert}"\nkey_file = "{key}"'
    )
    path = agent_config(tmp, port, {"s1": scanner_device(sim)}, mqtt_extra)
    text = path.read_text().replace("reconnect_max_s = 1", "reconnect_max_s = 2")
    path.write_text(text.replace('agent_id = "test-agent"', f'agent_id = "tls-{case}"'))
    return path


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_tls_or_credentials_fail_clearly_then_nothing_is_lost(
    tmp_path: Path, pki: Pki, scanner: Factory, agent_factory: Factory, case: Case
) -> None:
    sim = scanner("scan", rate=20, seed=80 + CASES.index(case))
    notify = NotifySocket(f"@edge-tls-{uuid.uuid4().hex[:12]}")
    backend = Subscriber(
        pki.plain_port, client_id=f"backend-{case.name}", auth=("backend", "be-pw")
    )
    cfg = _config(tmp_path, pki, sim, case.name, fixed=False)
    agent: Agent = without_service_env(agent_factory(cfg, {"NOTIFY_SOCKET": notify.address}),
                                       keep={"NOTIFY_SOCKET": ""})  # fmt: skip
    db = tmp_path / "state" / "queue.db"
    try:
        agent.start()
        assert agent.proc is not None
        pid, t0, cpu0 = agent.proc.pid, time.monotonic(), _cpu_s(agent.proc.pid)
        sim.start(count=READINGS)
        want = 4 if case.fix == "broker" else 2  # the broker case also shows the backoff
        assert agent.wait_log("mqtt_connect_failed", 5), agent.log_text()
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline and (
            _failures(agent) < want or len(queue_rows(db)) < READINGS
        ):
            time.sleep(0.1)
        window, cpu = time.monotonic() - t0, _cpu_s(pid) - cpu0
        fails = [e for e in agent.events() if e["event"] == "mqtt_connect_failed"]

        # the process runs on, readings are committed, nothing was sent
        assert agent.proc.poll() is None, agent.log_text()
        rows = queue_rows(db)
        assert len(rows) == READINGS and all(r["sent_ns"] is None for r in rows)
        # a clear reason in the log line, in STATUS=, and no hot loop
        assert len(fails) >= want, agent.log_text()
        assert all(re.search(case.reason, e["why"]) for e in fails), fails
        assert not any(e["event"] == "mqtt_connected" for e in agent.events())

        def status_names_reason() -> bool:
            return any(
                "broker down (" in v and re.search(case.reason, v.split("broker down (", 1)[1])
                for _, v in notify.values("STATUS")
            )

        # STATUS= follows a change within the daemon's 0.5 s status tick
        assert notify.wait(status_names_reason, 2.0), notify.values("STATUS")
        times = [_wall(e) for e in fails]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert min(gaps) >= 0.8 * FIRST_RETRY_S[0], f"reconnect attempts {gaps} s apart"
        if case.fix == "broker":  # jittered doubling: wait k >= 1 is >= RECONNECT_MIN_S * 2**k / 2
            floors = [0.8 * RECONNECT_MIN_S * 2**k / 2 for k in range(1, len(gaps))]
            grown = all(g >= f for g, f in zip(gaps[1:], floors, strict=True))
            assert grown, f"no backoff: attempts {gaps} s apart (floors {floors})"
        cpu_pct = 100 * cpu / window
        assert cpu_pct < 15, f"{cpu_pct:.1f} % of a core while the broker refuses us"

        # fix it
        t_fix = time.monotonic()
        if case.fix == "restart":
            agent.stop()
            _config(tmp_path, pki, sim, case.name, fixed=True)
            agent.start()
        else:
            _passwd(pki.passwd, "agent2", "stale-pw")
            assert pki.broker.proc is not None
            pki.broker.proc.send_signal(signal.SIGHUP)  # mosquitto re-reads password_file
        sim.wait(5)
        emitted = [ledger.Emitted("s1", t.value, t.t) for t in sim.truth if t.delivered]
        assert len(emitted) == READINGS
        assert backend.wait_for(lambda: _received(backend, "s1") >= READINGS, 10)
        t_drained = time.monotonic() - t_fix
        alarms = [json.loads(p) for p in backend.payloads("/alarm")]
        if case.fix == "broker":  # kept in RAM while the broker refused us, sent once connected
            assert [a["alarm"] for a in alarms] == ["mqtt_connect_failed"], alarms
            assert re.search(case.reason, alarms[0]["reason"]), alarms
        agent.stop()
        ledger.check(
            f"T18 {case.name}",
            backend,
            db,
            emitted=emitted,
            max_dup_ratio=0.0,
            connect_failures=len(fails),
            reason=fails[0]["why"],
            attempt_gaps_s=[round(g, 2) for g in gaps],
            cpu_pct=round(cpu_pct, 2),
            drained_after_fix_s=round(t_drained, 2),
        )
    finally:
        agent.stop()
        backend.close()
        notify.close()


def _wall(event: dict[str, Any]) -> float:
    return dt.datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00")).timestamp()


def _failures(agent: Agent) -> int:
    return agent.log_path().read_text().count('"event": "mqtt_connect_failed"')


def _received(backend: Subscriber, device: str) -> int:
    return len({r["id"] for _, r in backend.readings() if r["device"] == device})


@pytest.mark.parametrize("client_cert", ["none", "other_ca"])
def test_listener_rejects_clients_without_a_device_certificate(pki: Pki, client_cert: str) -> None:
    """D9: ``require_certificate true``; a certificate from another CA is no better than none."""
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    if client_cert == "other_ca":
        ctx.load_cert_chain(str(pki.other_cert), str(pki.other_key))
    events: list[tuple[str, str]] = []
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"d9-{client_cert}",
                    protocol=mqtt.MQTTv5)  # fmt: skip
    c.tls_set_context(ctx)
    c.username_pw_set("agent", "agent-pw")  # right password: only the certificate is wrong
    c.on_connect = lambda _c, _u, _f, rc, _p=None: events.append(("connect", str(rc)))
    c.on_disconnect = lambda _c, _u, _f, rc, _p=None: events.append(("disconnect", str(rc)))
    try:
        c.connect("127.0.0.1", pki.broker.port, keepalive=5)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and not events:
            c.loop(0.1)
    except OSError as err:  # the broker's alert can already end the handshake
        events.append(("error", str(err)))
    finally:
        c.disconnect()
    assert events, "no outcome within 3 s"
    assert ("connect", "Success") not in events, events
    assert events[0][0] in ("disconnect", "error"), events


def test_no_tls_escape_hatches_in_the_source() -> None:
    """D8: nothing in edge_agent/ can turn verification off."""
    banned = re.compile(
        r"tls_insecure_set\s*\(\s*True|CERT_NONE|CERT_OPTIONAL|check_hostname\s*=\s*False"
        r"|_create_unverified_context|PROTOCOL_TLSv1\b|TLSVersion\.(TLSv1|TLSv1_1|SSLv3)\b"
    )
    hits = [
        f"{p.relative_to(ROOT)}:{n}: {line.strip()}"
        for p in sorted((ROOT / "edge_agent").rglob("*.py"))
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if banned.search(line)
    ]
    assert hits == []


def test_client_tls_context_verifies_and_needs_tls_1_2(tmp_path: Path) -> None:
    """D8: the context paho gets: the private CA only, hostname checked, TLS >= 1.2, client cert."""
    ca, ca_key, ca_cert = make_ca(tmp_path, "device-ca")
    cert, key = make_client_cert(tmp_path, ca_key, ca_cert, "test-agent")
    cfg = agent_config(tmp_path, 8883, {}, f'[mqtt.tls]\nca_file = "{ca}"\n'
                       f'cert_file = "{cert}"\nkey_file = "{key}"')  # fmt: skip
    mqtt_cfg = load_config(cfg).mqtt
    assert mqtt_cfg.tls == TlsConfig(ca_file=ca, cert_file=cert, key_file=key)
    ctx = tls_context(mqtt_cfg.tls)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert [c["subject"] for c in ctx.get_ca_certs()] == [((("commonName", "device-ca"),),)]
    client = build_client(mqtt_cfg, "edge-agent-x", None)
    wired = client._ssl_context
    assert client._ssl and wired is not None
    assert wired.verify_mode == ssl.CERT_REQUIRED and wired.check_hostname
    assert wired.minimum_version >= ssl.TLSVersion.TLSv1_2
