"""D10 / D13: the MQTT password and the TLS client key never leave where they are kept.

The real agent runs against a broker that requires both (a client certificate on a TLS
listener with ``require_certificate true``, and a password from ``mosquitto_passwd``), with the
password given by ``password_file`` or by ``password_env``. While it runs and holds readings,
the technician's commands run too: ``status`` (human and ``--json``), ``config check`` (human and
``--json``), ``doctor --json`` and ``broker-test --json`` (which itself connects with both
secrets). Then every byte the agent and those commands produced is searched for the password
and for the key (its PEM header and its first line of key material): the agent's logs, the
commands' stdout and stderr, ``STATUS=`` datagrams, the queue file with its ``-wal``/``-shm``,
everything the backend received, and the agent's ``/proc/<pid>/cmdline`` (the password is never
in argv): 0 hits. The test first checks that the secrets were really used (the agent connected;
the key file does hold those bytes), so a grep that finds nothing means something.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edge_agent.journal import journal_dir
from simulators.mosquitto import Mosquitto, free_ports
from tests.harness import ROOT, Agent, Subscriber, agent_config, queue_rows
from tests.test_e2e import scanner_device
from tests.test_systemd import NotifySocket, without_service_env
from tests.tls import make_ca, make_client_cert, make_server_cert

pytestmark = pytest.mark.faults

Factory = Callable[..., Any]
PEM_HEADER = b"-----BEGIN PRIVATE KEY-----"


@dataclass(frozen=True)
class Site:
    """A broker that wants a client certificate and a password, and the agent's secrets."""

    broker: Mosquitto
    plain_port: int
    password: str
    ca: Path
    cert: Path
    key: Path


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    bdir = tmp_path_factory.mktemp("secrets-broker")
    cdir = tmp_path_factory.mktemp("secrets-client")
    ca, ca_key, ca_cert = make_ca(bdir, "device-ca")
    srv, srv_key = make_server_cert(bdir, ca_key, ca_cert, "127.0.0.1")
    cert, key = make_client_cert(cdir, ca_key, ca_cert, "test-agent")
    password = "Pw-" + secrets.token_hex(12)
    passwd = bdir / "passwd"
    for i, (user, pw) in enumerate((("agent", password), ("backend", "be-pw"))):
        create = ["-c"] if i == 0 else []
        subprocess.run(["mosquitto_passwd", "-b", *create, str(passwd), user, pw], check=True)
    main_port, plain = free_ports(2)
    extra = (
        f"password_file {passwd}\ncafile {ca}\ncertfile {srv}\nkeyfile {srv_key}\n"
        f"require_certificate true\nlistener {plain} 127.0.0.1\n"
    )
    broker = Mosquitto(bdir, port=main_port, extra=extra, anonymous=False)
    broker.start()
    yield Site(broker, plain, password, ca, cert, key)
    broker.stop()


def _cli(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "edge_agent", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )


def _hits(blob: bytes, needles: dict[str, bytes]) -> list[str]:
    return [name for name, needle in needles.items() if needle in blob]


@pytest.mark.parametrize("source", ["password_file", "password_env"])
def test_password_and_key_never_leave_their_files(
    tmp_path: Path, site: Site, scanner: Factory, agent_factory: Factory, source: str
) -> None:
    key_pem = site.key.read_bytes()
    key_line = key_pem.splitlines()[1]  # the first line of base64 key material
    assert PEM_HEADER in key_pem and len(key_line) >= 40
    needles = {
        "password": site.password.encode(),
        "pem header": PEM_HEADER,
        "PRIVATE KEY": b"PRIVATE KEY",
        "key material": key_line,
    }
    env_extra: dict[str, str] = {}
    if source == "password_file":
        pw_file = tmp_path / "mqtt.pw"
        pw_file.write_text(site.password + "\n")
        pw_file.chmod(0o600)
        pw_conf = f'password_file = "{pw_file}"'
    else:
        env_extra["EDGE_AGENT_TEST_MQTT_PW"] = site.password
        pw_conf = 'password_env = "EDGE_AGENT_TEST_MQTT_PW"'
    sim = scanner("scan", rate=100, seed=90)
    mqtt_extra = (
        f'username = "agent"\n{pw_conf}\n'
        f'[mqtt.tls]\nca_file = "{site.ca}"\ncert_file = "{site.cert}"\nkey_file = "{site.key}"'
    )
    cfg = agent_config(tmp_path, site.broker.port, {"s1": scanner_device(sim)}, mqtt_extra)
    notify = NotifySocket(f"@edge-secrets-{uuid.uuid4().hex[:12]}")
    backend = Subscriber(site.plain_port, client_id=f"be-{source}", auth=("backend", "be-pw"))
    agent: Agent = without_service_env(
        agent_factory(cfg, {**env_extra, "NOTIFY_SOCKET": notify.address}),
        keep={"NOTIFY_SOCKET": ""},
    )
    try:
        agent.start()
        assert agent.wait_log("mqtt_connected", 10), agent.log_text()  # the secrets work
        sim.start(count=20)
        sim.wait(5)
        assert backend.wait_for(lambda: len(backend.readings()) >= 20, 10)
        assert agent.proc is not None
        cmdline = Path(f"/proc/{agent.proc.pid}/cmdline").read_bytes()
        assert b"edge_agent" in cmdline

        env = {**agent.env}
        env.pop("NOTIFY_SOCKET", None)
        commands = [
            ["status", "-c", str(cfg), "--json"],
            ["status", "-c", str(cfg)],
            ["config", "check", str(cfg), "--json"],
            ["config", "check", str(cfg)],
            ["doctor", "-c", str(cfg), "--json"],
            ["broker-test", "-c", str(cfg), "--json"],
        ]
        procs = [_cli(c, env) for c in commands]
        outputs: dict[str, bytes] = {}
        for c, p in zip(commands, procs, strict=True):
            out, err = p.communicate(timeout=30)
            outputs[" ".join(x for x in c if x not in (str(cfg), "-c"))] = out + err
            if c[0] in ("status", "config", "broker-test"):
                assert p.returncode == 0, (c, out, err)
        assert b'"connected": true' in outputs["status --json"], outputs["status --json"]
        assert b'"ok": true' in outputs["broker-test --json"], outputs["broker-test --json"]
        agent.stop()

        db = tmp_path / "state" / "queue.db"
        assert len(queue_rows(db)) >= 20
        found: dict[str, list[str]] = {}
        places: dict[str, bytes] = {
            "argv": cmdline,
            **{f"log {p.name}": p.read_bytes() for p in tmp_path.glob("agent-*.log")},
            **{
                f"queue {p.name}": p.read_bytes()
                for p in db.parent.glob("queue.db*")
                if p.is_file()
            },
            # the capture journal: every reading read, as the device threads wrote it
            "journal": b"".join(p.read_bytes() for p in sorted(journal_dir(db).iterdir())),
            **{f"cli {k}": v for k, v in outputs.items()},
            "STATUS=": "\n".join(d.text for d in notify.all()).encode(),
            "mqtt": b"\n".join(t.encode() + b" " + p for t, p, _ in backend.messages),
        }
        assert any(name.startswith("queue queue.db") for name in places)
        empty = [name for name, blob in places.items() if not blob and "queue.db-" not in name]
        assert not empty, f"nothing to search in {empty}"
        for name, blob in places.items():
            hits = _hits(blob, needles)
            if hits:
                found[name] = hits
        assert found == {}, found
    finally:
        agent.stop()
        backend.close()
        notify.close()


def test_a_leak_would_be_found(site: Site) -> None:
    """The search itself: the secrets as they sit in their own files are found."""
    key_pem = site.key.read_bytes()
    needles = {"password": site.password.encode(), "pem header": PEM_HEADER}
    assert _hits(key_pem, needles) == ["pem header"]
    assert _hits(f"x{site.password}x".encode(), needles) == ["password"]
    assert os.environ.get("EDGE_AGENT_TEST_MQTT_PW") is None
