"""The lab's host-side parts: the offline wheelhouse, the checkout handed to the guest, a broker
with a password on the host, the agent's config, a scanner on the emulated USB serial adapter,
and what the guest's agent left behind (journal, queue file) for the ledger.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from simulators.mosquitto import Mosquitto
from simulators.pty_port import PtyPort
from simulators.serial_line_scanner import ScannerSim, ScannerSimConfig
from tests.harness import Subscriber
from tests.vm.image import BaseImage, cache_dir
from tests.vm.qemu import Guest

ROOT = Path(__file__).resolve().parents[2]
#: What the guest's agent is called and where the host's broker is, seen from the guest.
AGENT_ID = "vmlab-pc1"
HOST_FROM_GUEST = "10.0.2.2"
MQTT_USER = "vmlab-pc1"
DEVICE = "scanner_1"
#: The scanner's framing in the simulator and in the agent's config.
SCANNER_CFG: dict[str, Any] = {
    "type": "serial_line_scanner",
    "baudrate": 115200,
    "framing": "terminator",
    "terminator": "CRLF",
    "aim_ids": True,
}


def checkout_files() -> list[Path]:
    """The checkout's files as git sees them (tracked and new, not ignored), relative."""
    out = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return [Path(p) for p in out.split("\0") if p and (ROOT / p).is_file()]


def stage_checkout(dest: Path) -> None:
    """Copy the checkout (what a technician copies to the line PC) to ``dest``."""
    shutil.rmtree(dest, ignore_errors=True)
    for rel in checkout_files():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)


def wheelhouse(dest: Path) -> float:
    """The offline wheelhouse for ``install.sh --wheels`` (the guest has no network for pip).

    Made the documented way (docs/install.md: ``pip wheel -w DIR CHECKOUT``) on the host, into
    a cache keyed by pyproject.toml so the dependencies are downloaded once; edge-agent's own
    wheel is rebuilt every time (the code changes). Returns the seconds it took.
    """
    t0 = time.monotonic()
    key = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()[:16]
    cached = cache_dir() / f"wheels-{key}"
    cached.mkdir(parents=True, exist_ok=True)
    for old in cached.glob("edge_agent-*.whl"):
        old.unlink()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--disable-pip-version-check",
            "--find-links",
            str(cached),
            "-w",
            str(cached),
            str(ROOT),
        ],
        check=True,
    )
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(cached, dest)
    return time.monotonic() - t0


def tree_hash(root: Path) -> str:
    """Hash of a directory's file names and contents."""
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def installed_image(base: BaseImage, wheels: Path, workdir: Path) -> tuple[Path, float | None]:
    """The base image with edge-agent installed by ``install.sh`` run in a chroot (install.sh's
    documented way to build an image): the starting disk of scenarios 2-6. The unit is not
    enabled (install.sh enables it only where systemd runs): a guest must not start the agent
    at boot while the test is still writing its config (the start would race the config and
    drop-ins, and the test's own ``systemctl start`` would then be a no-op).

    Cached beside the base image, keyed by the base image, the wheels and the checkout. Scenario
    1 installs on the live guest instead. Returns the raw image and the build seconds (None:
    cached).
    """
    stage_checkout(workdir / "src")
    key = hashlib.sha256(
        f"{base.key}{tree_hash(wheels)}{tree_hash(workdir / 'src')}".encode()
    ).hexdigest()[:16]
    out = cache_dir() / f"installed-{key}.raw"
    if out.exists():
        return out, None
    t0 = time.monotonic()
    for old in cache_dir().glob("installed-*.raw"):
        old.unlink()
    tree = workdir / "rootfs"
    subprocess.run(["cp", "-a", "--reflink=auto", str(base.tree), str(tree)], check=True)
    shutil.copytree(workdir / "src", tree / "root/edge-agent")
    shutil.copytree(wheels, tree / "root/wheels")
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
    mounts = [tree / "proc", tree / "dev"]
    subprocess.run(["mount", "-t", "proc", "proc", str(mounts[0])], check=True)
    subprocess.run(["mount", "--bind", "/dev", str(mounts[1])], check=True)
    try:
        subprocess.run(
            [
                "chroot",
                str(tree),
                "/root/edge-agent/systemd/install.sh",
                "--wheels",
                "/root/wheels",
            ],
            check=True,
            env=env,
            capture_output=True,
        )
    finally:
        for m in reversed(mounts):
            subprocess.run(["umount", "-l", str(m)], check=False)
    shutil.rmtree(tree / "root/edge-agent")
    shutil.rmtree(tree / "root/wheels")
    tmp = out.with_suffix(".tmp")
    subprocess.run(
        ["mkfs.ext4", "-q", "-F", "-L", "root", "-d", str(tree), str(tmp), "2G"],
        check=True,
        capture_output=True,
    )
    tmp.rename(out)
    shutil.rmtree(tree)
    return out, time.monotonic() - t0


def auth_broker(workdir: Path, password: str) -> Mosquitto:
    """A Mosquitto on the host's loopback (10.0.2.2 from the guest) that wants a password.

    Users: the agent (``MQTT_USER``) and ``backend`` (password ``backend-pw``).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    pw = workdir / "passwd"
    for i, (user, word) in enumerate(((MQTT_USER, password), ("backend", "backend-pw"))):
        subprocess.run(
            ["mosquitto_passwd", "-b", *(["-c"] if i == 0 else []), str(pw), user, word],
            check=True,
            capture_output=True,
        )
    pw.chmod(0o600)
    broker = Mosquitto(workdir, extra=f"password_file {pw}\n", anonymous=False)
    broker.start()
    return broker


def agent_toml(broker_port: int, devices: dict[str, dict[str, Any]], extra: str = "") -> str:
    """The line's config as the technician writes it into /etc/edge-agent/edge-agent.toml."""
    lines = [
        "[node]",
        'site = "LAB"',
        'line = "L1"',
        f'agent_id = "{AGENT_ID}"',
        "[mqtt]",
        f'brokers = [{{ host = "{HOST_FROM_GUEST}", port = {broker_port} }}]',
        f'username = "{MQTT_USER}"',
        'password_credential = "mqtt_password"',
        "reconnect_max_s = 2",
        "[log]",
        'level = "info"',
        'format = "json"',
        extra,
    ]
    for dev_id, table in devices.items():
        lines.append(f"[devices.{dev_id}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def write_config(guest: Guest, toml: str, password: str | None = None) -> None:
    """Put the config (0640 root:edge-agent) and the password file (0600 root) in the guest."""
    (guest.share / "edge-agent.toml").write_text(toml)
    script = (
        "install -m 0640 -o root -g edge-agent /mnt/lab/edge-agent.toml "
        "/etc/edge-agent/edge-agent.toml\n"
    )
    if password is not None:
        (guest.share / "mqtt.password").write_text(password + "\n")
        script += (
            "install -m 0600 -o root -g root /mnt/lab/mqtt.password /etc/edge-agent/mqtt.password\n"
            "rm -f /mnt/lab/mqtt.password\n"
        )
    guest.run(script)


def configure(
    guest: Guest, broker_port: int, devices: dict[str, dict[str, Any]], password: str
) -> Subscriber:
    """Write the agent's config and password into the guest, clear a failed unit state, and
    connect the backend (user ``backend``) on the host broker: the start of every scenario
    that runs the service against that broker. The caller waits for ``subscribed`` and closes
    it."""
    write_config(guest, agent_toml(broker_port, devices), password)
    guest.run("systemctl reset-failed edge-agent.service || true")
    return Subscriber(broker_port, auth=("backend", "backend-pw"))


def install(guest: Guest, wheels: Path) -> tuple[str, float]:
    """Copy the checkout in and run ``systemd/install.sh --wheels`` as root on the live system.

    ``wheels`` must be under ``guest.share``. Returns install.sh's output and its seconds.
    """
    stage_checkout(guest.share / "src")
    rel = wheels.relative_to(guest.share)
    res = guest.run(
        "rm -rf /root/edge-agent && cp -a /mnt/lab/src /root/edge-agent\n"
        f"/root/edge-agent/systemd/install.sh --wheels /mnt/lab/{rel}\n",
        timeout=600,
    )
    return res.out, res.seconds


def start_service(guest: Guest, timeout: float = 90.0) -> float:
    """``systemctl start`` (Type=notify: returns once READY=1 came); returns the seconds."""
    state = guest.run("systemctl is-active edge-agent.service", check=False).out.strip()
    assert state in ("inactive", "failed"), f"edge-agent is already {state}: start would do nothing"
    res = guest.run("systemctl start edge-agent.service", timeout=timeout, check=False)
    if res.rc != 0:
        status = guest.run(
            "systemctl status --no-pager -l edge-agent.service; "
            "journalctl -u edge-agent.service -o cat --no-pager | tail -40",
            check=False,
        ).out
        msg = f"systemctl start edge-agent failed ({res.rc}):\n{res.out}\n{status}"
        raise AssertionError(msg)
    return res.seconds


def journal_lines(guest: Guest, *, since_boot: bool = False) -> list[str]:
    """The service's own output in the journal (``-o cat``: one line per message)."""
    res = guest.run(
        f"journalctl {'-b' if since_boot else ''} -u edge-agent.service -o cat --no-pager "
        "_COMM=edge-agent + SYSLOG_IDENTIFIER=edge-agent",
        check=False,
    )
    return [ln for ln in res.out.splitlines() if ln.strip()]


def journal_events(guest: Guest) -> list[dict[str, Any]]:
    """The service's JSON log lines, parsed (lines that are not JSON are left out)."""
    events = []
    for ln in journal_lines(guest):
        with contextlib.suppress(ValueError):
            ev = json.loads(ln)
            if isinstance(ev, dict):
                events.append(ev)
    return events


def fetch_queue(guest: Guest, dest: Path) -> Path:
    """Copy the agent's queue out of the guest (the service must be stopped); returns the db."""
    guest.run(
        "rm -rf /mnt/lab/queue && mkdir /mnt/lab/queue\n"
        "cp -a /var/lib/edge-agent/queue.db* /mnt/lab/queue/\n"
    )
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(guest.share / "queue", dest)
    return dest / "queue.db"


def checked_queue(guest: Guest, dest: Path) -> Path:
    """``integrity_check`` ok in the guest (asserted), then the queue copied out to ``dest``
    for the ledger; the service must be stopped."""
    assert integrity_check(guest) == "ok"
    return fetch_queue(guest, dest)


def integrity_check(guest: Guest) -> str:
    """``PRAGMA integrity_check`` on the guest's queue, run in the guest."""
    return guest.run(
        "python3 -c \"import sqlite3; c = sqlite3.connect('/var/lib/edge-agent/queue.db'); "
        "print(c.execute('pragma integrity_check').fetchone()[0])\"",
    ).out.strip()


class HostTtyPort(PtyPort):
    """:class:`PtyPort`'s interface over the socat pty of the guest's USB serial adapter, so
    :class:`ScannerSim` writes into the emulated adapter (the guest's /dev/ttyUSB0)."""

    def __init__(self, guest: Guest) -> None:
        super().__init__(None)
        self.guest = guest

    def plug(self) -> str:
        with self._lock:
            assert self.guest.usb is not None
            self.master = self.guest.usb.open()
            self.path = str(self.guest.usb.pty)
            self.plugs += 1
            return self.path

    def unplug(self) -> None:
        with self._lock:
            if self.master is not None:
                with contextlib.suppress(OSError):
                    os.close(self.master)
            self.master = None

    def pending(self) -> int:
        return 0


def scanner(guest: Guest, rate: float = 5.0, seed: int = 1) -> ScannerSim:
    """The simulated scanner behind the guest's USB serial adapter (AIM ids, CRLF frames)."""
    cfg = ScannerSimConfig(framing="terminator", terminator="CRLF", aim=True, rate=rate, seed=seed)
    return ScannerSim(HostTtyPort(guest), cfg)
