"""A private Mosquitto broker on a free loopback port, standing in for the hub's broker.

Configured the way edge-agent's guarantee needs a broker to be (docs/reliability.md B1, B2):
``persistence true``, ``autosave_interval 1``, ``autosave_on_changes true`` (a PUBACKed message
survives a broker ``kill -9``) and ``max_queued_messages 0`` (a backend session that is offline
for a long time loses nothing). Started as root, Mosquitto drops to user ``mosquitto``, so its
directory is chowned to that user.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path

from simulators import end_process

CONF = """\
per_listener_settings false
allow_anonymous {anonymous}
persistence true
persistence_location {dir}/
autosave_interval 1
autosave_on_changes true
max_queued_messages 0
log_dest file {dir}/mosquitto.log
log_type error
log_type warning
log_type notice
listener {port} 127.0.0.1
"""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports (two free_port() calls can return the same one)."""
    ports: set[int] = set()
    while len(ports) < n:
        ports.add(free_port())
    return sorted(ports)


def port_in_use(port: int) -> bool:
    """Whether something listens on 127.0.0.1:``port`` (a bind as Mosquitto does it fails)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT leftovers are fine
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def binary() -> str | None:
    """Path of the mosquitto binary, if installed."""
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()), None
    )


class Mosquitto:
    """One broker process; can be stopped, killed and restarted on the same port and data.

    Args:
        workdir: directory for config, persistence and log.
        port: TCP port on 127.0.0.1 (None: a free one).
        extra: more mosquitto.conf lines (TLS files, password_file, acl_file ...), appended
            after the listener line so listener options apply to it.
        anonymous: allow clients without a username.
    """

    def __init__(
        self, workdir: Path, port: int | None = None, extra: str = "", anonymous: bool = True
    ) -> None:
        exe = binary()
        if exe is None:
            msg = "mosquitto binary not found (apt-get install mosquitto)"
            raise FileNotFoundError(msg)
        self.exe = exe
        self.dir = workdir
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.dir.mkdir(parents=True, exist_ok=True)
        self.conf = self.dir / "mosquitto.conf"
        self.conf.write_text(
            CONF.format(port=self.port, dir=self.dir, anonymous=str(anonymous).lower()) + extra
        )
        self._chown()

    def _chown(self) -> None:
        if os.geteuid() != 0:
            return
        try:
            user = pwd.getpwnam("mosquitto")
        except KeyError:
            return
        for path in (self.dir, *self.dir.iterdir()):
            os.chown(path, user.pw_uid, user.pw_gid)
        # The broker must reach its directory: let others traverse (not list) the parents,
        # e.g. pytest's 0700 /tmp/pytest-of-root.
        for parent in self.dir.resolve().parents:
            mode = parent.stat().st_mode
            if not mode & stat.S_IXOTH:
                parent.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)

    def start(self, timeout: float = 10.0) -> None:
        """Start and wait until the port accepts connections, from this broker.

        Refuses a port something else listens on (e.g. a broker an earlier run left behind):
        connecting to it would look like this broker is up.
        """
        if port_in_use(self.port):
            msg = f"127.0.0.1:{self.port} is already in use (a broker left running?)"
            raise RuntimeError(msg)
        self._chown()
        self.proc = subprocess.Popen(
            [self.exe, "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                log = (
                    (self.dir / "mosquitto.log").read_text()
                    if (self.dir / "mosquitto.log").exists()
                    else ""
                )
                msg = f"mosquitto exited with {self.proc.returncode}: {err} {log}"
                raise RuntimeError(msg)
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 0.2),
            ):
                if self.proc.poll() is None:
                    return
            time.sleep(0.05)
        msg = f"mosquitto did not listen on {self.port} within {timeout} s"
        raise TimeoutError(msg)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop with ``sig`` (SIGKILL for a crash) and wait for the process to end."""
        if self.proc is None:
            return
        end_process(self.proc, sig, 10)
        if self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    def restart(self, down_s: float = 0.0, sig: int = signal.SIGTERM) -> None:
        """Stop, stay down ``down_s`` seconds, start again on the same port and data."""
        self.stop(sig)
        time.sleep(down_s)
        self.start()
