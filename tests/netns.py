"""A throw-away network namespace joined to the root namespace by a veth pair, for fault tests.

::

    root namespace                         namespace <name>
    <host_if>  10.231.N.1/30  ──veth──  <ns_if>  10.231.N.2/30   (the agent runs here)

A broker in the root namespace listens on :attr:`Netns.host_addr`; a process started with
:meth:`Netns.command` reaches it there and nowhere else (the namespace has its own loopback).
Faults, each undone by :meth:`Netns.heal`:

* :meth:`Netns.drop` — every packet in both directions vanishes, no RST, no ICMP (the effect
  of an ``iptables -j DROP`` rule). ``tc netem loss 100%`` when the kernel has ``sch_netem``;
  otherwise a ``tbf`` qdisc whose bucket (1 byte) is smaller than any packet, which ``tbf``
  discards on enqueue. The qdisc goes on both ends, so the broker's segments vanish too and
  the broker cannot help the agent notice (no FIN reaches it).
* :meth:`Netns.link_down` — ``ip link set <ns_if> down``: the route goes away and sends fail
  with ENETUNREACH, the peer loses carrier.

``with Netns.create() as ns:`` deletes the namespace on exit, even on failure, after killing
any process still running inside it (only processes the test started can be there); deleting
the namespace destroys the veth pair. :func:`unavailable` says why it cannot be used here.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

_DROP_NETEM = ("netem", "loss", "100%")
_DROP_TBF = ("tbf", "rate", "8bit", "burst", "1", "limit", "1")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=10)


def unavailable() -> str | None:
    """Why a namespace cannot be created here (None: it can)."""
    if shutil.which("ip") is None or shutil.which("tc") is None:
        return "iproute2 (`ip`, `tc`) not installed"
    name = f"ea-probe-{os.getpid()}"
    r = _ip("netns", "add", name, check=False)
    if r.returncode != 0:
        return f"`ip netns add` failed (needs CAP_NET_ADMIN): {r.stderr.strip()}"
    _ip("netns", "del", name, check=False)
    return None


class Netns:
    """One namespace and its veth pair (use :meth:`create`)."""

    def __init__(self, name: str, subnet: int) -> None:
        self.name = name
        tag = name[-6:]
        self.host_if = f"eah{tag}"
        self.ns_if = f"ean{tag}"
        self.host_addr = f"10.231.{subnet}.1"
        self.ns_addr = f"10.231.{subnet}.2"
        self.drop_qdisc: tuple[str, ...] | None = None
        self._faults: list[tuple[str, ...]] = []

    @classmethod
    @contextlib.contextmanager
    def create(cls) -> Iterator[Netns]:
        """A fresh namespace with the veth pair up and addressed; removed on exit."""
        subnet = _free_subnet()
        ns = cls(f"ea-{os.getpid() % 10000:04d}{random.randrange(1 << 16):04x}"[:15], subnet)
        try:
            ns._setup()
            yield ns
        finally:
            ns._teardown()

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside the namespace (``ip netns exec`` execs: the pid is argv's)."""
        return ["ip", "netns", "exec", self.name, *argv]

    def exec(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """Run a command inside the namespace and wait (raises on failure)."""
        return subprocess.run(
            self.command(argv), capture_output=True, text=True, check=True, timeout=10
        )

    # ---- faults ----------------------------------------------------------------------
    def drop(self) -> str:
        """Silently drop every packet both ways; returns the qdisc used (``netem``/``tbf``)."""
        qdisc = self._drop_qdisc()
        self.exec("tc", "qdisc", "replace", "dev", self.ns_if, "root", *qdisc)
        self._faults.append(("ns", "tc", "qdisc", "del", "dev", self.ns_if, "root"))
        subprocess.run(
            ["tc", "qdisc", "replace", "dev", self.host_if, "root", *qdisc],
            check=True,
            capture_output=True,
            timeout=10,
        )
        self._faults.append(("host", "tc", "qdisc", "del", "dev", self.host_if, "root"))
        return qdisc[0]

    def link_down(self) -> None:
        """Take the namespace end of the veth down."""
        self.exec("ip", "link", "set", self.ns_if, "down")
        self._faults.append(("ns", "ip", "link", "set", self.ns_if, "up"))

    def heal(self) -> None:
        """Undo every fault, newest first."""
        while self._faults:
            where, *argv = self._faults.pop()
            subprocess.run(
                self.command(argv) if where == "ns" else argv,
                check=True,
                capture_output=True,
                timeout=10,
            )

    def pids(self) -> list[int]:
        """Processes running inside the namespace."""
        r = _ip("netns", "pids", self.name, check=False)
        return [int(p) for p in r.stdout.split()]

    # ---- set-up ----------------------------------------------------------------------
    def _drop_qdisc(self) -> tuple[str, ...]:
        if self.drop_qdisc is None:
            probe = subprocess.run(
                ["tc", "qdisc", "add", "dev", self.host_if, "root", *_DROP_NETEM],
                check=False,
                capture_output=True,
                timeout=10,
            )
            self.drop_qdisc = _DROP_NETEM if probe.returncode == 0 else _DROP_TBF
            if probe.returncode == 0:
                _tc_del(self.host_if)
        return self.drop_qdisc

    def _setup(self) -> None:
        _ip("netns", "add", self.name)
        _ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
        _ip("link", "set", self.ns_if, "netns", self.name)
        _ip("addr", "add", f"{self.host_addr}/30", "dev", self.host_if)
        _ip("link", "set", self.host_if, "up")
        _ip("-n", self.name, "addr", "add", f"{self.ns_addr}/30", "dev", self.ns_if)
        _ip("-n", self.name, "link", "set", self.ns_if, "up")
        _ip("-n", self.name, "link", "set", "lo", "up")
        _wait_link_up(self.host_if)

    def _teardown(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = self.pids()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + 3
            while pids and self.pids() and time.monotonic() < deadline:
                time.sleep(0.05)
        _ip("netns", "del", self.name, check=False)
        _ip("link", "del", self.host_if, check=False)  # gone with the namespace, normally


def _free_subnet() -> int:
    used = _ip("-o", "-4", "addr", "show").stdout
    free = [n for n in range(1, 255) if f" 10.231.{n}." not in used]
    return random.choice(free)


def _wait_link_up(ifname: str, timeout: float = 5.0) -> None:
    """Wait until the veth has carrier (the peer side is up)."""
    carrier = Path(f"/sys/class/net/{ifname}/carrier")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if carrier.read_text().strip() == "1":
                return
        time.sleep(0.02)


def _tc_del(ifname: str) -> None:
    subprocess.run(["tc", "qdisc", "del", "dev", ifname, "root"], check=False, timeout=10)
