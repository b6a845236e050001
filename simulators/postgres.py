"""A private PostgreSQL server in a temporary directory on a free loopback port, for the hub.

``initdb`` into the directory (trust authentication, loopback and a unix socket in the same
directory only), ``pg_ctl start``, one database ``hub``; never the machine's own service.
Run as root (CI), the server runs as the ``postgres`` user (or ``nobody``): PostgreSQL refuses
to run as root. ``stop(sig=SIGKILL)`` crashes it; ``start()`` again recovers from its WAL.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

from simulators.mosquitto import free_port

#: Binaries: Debian's versioned directory first, then PATH.
SEARCH = ("/usr/lib/postgresql/*/bin",)


def bindir() -> Path | None:
    """Where initdb/pg_ctl/postgres are, if installed."""
    for pattern in SEARCH:
        for d in sorted(glob.glob(pattern), reverse=True):
            if (Path(d) / "initdb").exists() and (Path(d) / "pg_ctl").exists():
                return Path(d)
    exe = shutil.which("initdb")
    return Path(exe).resolve().parent if exe else None


class Postgres:
    """One server; ``dsn`` connects to its database ``hub`` as user ``hub``.

    Args:
        workdir: data directory parent (data/, socket, log).
        durable: keep fsync on (benchmarks); off makes tests faster and is safe as long as
            the machine itself does not crash (a server kill -9 still recovers from its WAL).
    """

    def __init__(self, workdir: Path, port: int | None = None, durable: bool = False) -> None:
        bd = bindir()
        if bd is None:
            msg = "PostgreSQL binaries not found (apt-get install postgresql)"
            raise FileNotFoundError(msg)
        self.bin = bd
        self.dir = workdir
        self.data = workdir / "data"
        self.port = port or free_port()
        self.durable = durable
        self.user = self._run_as()
        self.dir.mkdir(parents=True, exist_ok=True)
        self._chown(self.dir)
        self._cmd(
            [
                str(self.bin / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "hub",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-locale",
            ],
        )
        conf = [
            "listen_addresses = '127.0.0.1'",
            f"port = {self.port}",
            f"unix_socket_directories = '{self.dir}'",
            "max_connections = 200",
            "shared_buffers = 64MB",
        ]
        if not durable:
            conf += ["fsync = off", "synchronous_commit = off", "full_page_writes = off"]
        with (self.data / "postgresql.conf").open("a") as f:
            f.write("\n".join(conf) + "\n")

    @property
    def dsn(self) -> str:
        """libpq connection string (TCP on loopback)."""
        return f"host=127.0.0.1 port={self.port} dbname=hub user=hub"

    def _run_as(self) -> pwd.struct_passwd | None:
        if os.geteuid() != 0:
            return None
        for name in ("postgres", "nobody"):
            with contextlib.suppress(KeyError):
                return pwd.getpwnam(name)
        msg = "running as root and neither user postgres nor nobody exists"
        raise RuntimeError(msg)

    def _chown(self, path: Path) -> None:
        if self.user is None:
            return
        os.chown(path, self.user.pw_uid, self.user.pw_gid)
        for parent in path.resolve().parents:  # let the server user traverse (not list) them
            mode = parent.stat().st_mode
            if not mode & stat.S_IXOTH:
                parent.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)

    def _cmd(self, argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        if self.user is not None:
            argv = ["runuser", "-u", self.user.pw_name, "--", *argv]
        r = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
        if check and r.returncode != 0:
            msg = f"{' '.join(argv)} exited {r.returncode}: {r.stderr.strip()} {r.stdout.strip()}"
            raise RuntimeError(msg)
        return r

    def start(self) -> None:
        """Start and wait until it accepts connections (and database ``hub`` exists)."""
        self._cmd(
            [
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.dir / "log"),
                "-w",
                "-t",
                "60",
                "start",
            ]
        )
        server = ["-h", str(self.dir), "-p", str(self.port), "-U", "hub"]
        r = self._cmd(
            [str(self.bin / "psql"), *server, "-d", "postgres", "-tAc",
             "SELECT 1 FROM pg_database WHERE datname = 'hub'"]
        )  # fmt: skip
        if r.stdout.strip() != "1":
            self._cmd([str(self.bin / "createdb"), *server, "hub"])

    def pid(self) -> int | None:
        """The postmaster's pid while running."""
        pidfile = self.data / "postmaster.pid"
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int(pidfile.read_text().splitlines()[0])
        return None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop (fast shutdown), or crash it with SIGKILL."""
        if sig == signal.SIGKILL:
            pid = self.pid()
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline and _alive(pid):
                    time.sleep(0.05)
            return
        self._cmd(
            [str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"],
            check=False,
        )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
