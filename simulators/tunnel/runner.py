"""Running a tunnel scanner simulator: ports from URLs, the demo wrapper, the shared CLI.

``make_port`` turns a driver's port string into the simulator's side of it:
``socket://127.0.0.1:N`` becomes a :class:`TcpPort` listening on N, ``listen://127.0.0.1:N``
a :class:`TcpClientPort` connecting to the agent's port N, and a path becomes a
:class:`~simulators.pty_port.PtyPort` behind that symlink (the way udev's
``/dev/serial/by-id`` names work).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from simulators import DemoDevice, announce, parse_faults, serve
from simulators.pty_port import PtyPort
from simulators.tunnel.engine import TunnelSim
from simulators.tunnel.model import SimConfig, SimPort
from simulators.tunnel.tcp_client import TcpClientPort
from simulators.tunnel.tcp_port import TcpPort

#: Faults the demo injects, so its output shows rejects being counted.
DEMO_FAULTS = {"noread": 0.04, "noise": 0.02, "garble": 0.01, "fragment": 0.2,
               "coalesce": 0.05, "late": 0.02, "duplicate": 0.02}  # fmt: skip


def make_port(url: str) -> SimPort:
    """The simulator's end of a driver port string (TCP on loopback, or a pty symlink)."""
    if url.startswith("socket://"):
        parts = urlsplit(url)
        if parts.hostname not in ("127.0.0.1", "localhost") or parts.port is None:
            msg = f"{url}: a simulator serves socket://127.0.0.1:<port> only"
            raise ValueError(msg)
        return TcpPort(parts.port)
    if url.startswith("listen://"):
        parts = urlsplit(url)
        if parts.port is None:
            msg = f"{url}: expected listen://<host>:<port>"
            raise ValueError(msg)
        return TcpClientPort(parts.port, parts.hostname or "127.0.0.1")
    link = Path(url)
    link.parent.mkdir(parents=True, exist_ok=True)
    return PtyPort(link)


class DemoTunnel(DemoDevice[TunnelSim]):
    """A :class:`TunnelSim` standing in for one configured device (``for_demo``).

    Args:
        sim: the simulator, its port not yet plugged.
        what: what it simulates, for the demo output.
    """

    def __init__(self, sim: TunnelSim, what: str) -> None:
        super().__init__(sim)
        self.what = what
        sim.port.plug()

    def expected(self) -> int:
        """Readings the agent should publish for what was written so far."""
        return len(self.sim.readings())

    def describe(self) -> str:
        """Where the simulated device is."""
        port = self.sim.port
        where = f"{port.url} -> {port.path}" if isinstance(port, PtyPort) else port.url
        return f"{self.what} on {where}, {self.sim.cfg.rate:g} gates/s"


def demo_tunnel(sim_cls: type[TunnelSim], url: str, cfg: SimConfig, what: str) -> DemoTunnel:
    """A ``sim_cls`` simulator serving ``url`` (a driver's port string) for the demo."""
    return DemoTunnel(sim_cls(make_port(url), cfg), what)


def common_parser(prog: str, doc: str | None, default_tcp: int) -> argparse.ArgumentParser:
    """Arguments every tunnel simulator takes; ``doc`` (the module docstring) is the help."""
    p = argparse.ArgumentParser(prog=prog, description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    where = p.add_mutually_exclusive_group()
    tcp_help = f"serve TCP on 127.0.0.1:PORT (default {default_tcp}; 0: any free port)"
    where.add_argument("--tcp", type=int, default=default_tcp, metavar="PORT", help=tcp_help)
    where.add_argument("--pty", type=Path, metavar="LINK", help="serve a pty behind this symlink")
    connect_help = "client mode: connect to the agent's listen:// port on 127.0.0.1:PORT"
    where.add_argument("--connect", type=int, metavar="PORT", help=connect_help)
    p.add_argument("--rate", type=float, default=5.0, help="gates per second (self trigger)")
    p.add_argument("--count", type=int, default=0, help="stop after N gates (0: never)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--scanner-no", type=int, default=1, help="digit that makes codes unique")
    trig_help = "self: photo-eye at --rate; command: only on host trigger commands"
    p.add_argument("--trigger", choices=["self", "command"], default="self", help=trig_help)
    p.add_argument("--faults", default="", help="e.g. noise=0.05,garble=0.02,fragment=0.3")
    p.add_argument("--truth", type=Path, help="append every written item to this JSONL file")
    return p


def port_from_args(args: argparse.Namespace) -> SimPort:
    """The port the CLI arguments ask for."""
    if args.connect:
        return TcpClientPort(args.connect)
    return PtyPort(args.pty) if args.pty else TcpPort(args.tcp)


def run_cli(sim: TunnelSim, count: int) -> int:
    """Plug, print the URL served, run until ``count`` gates or ^C, clean up."""
    url = sim.port.plug()
    print(sim.port.url, flush=True)
    if isinstance(sim.port, PtyPort):
        print(f"pty {url}", file=sys.stderr, flush=True)
    announce(sim.port.url)
    sim.start(count)
    return serve(sim.wait, sim.stop, sim.port.close)


def cli_main(sim_cls: type[TunnelSim], cfg_cls: type[SimConfig], args: argparse.Namespace,
             **extra: Any) -> int:  # fmt: skip
    """Run ``sim_cls`` by hand: :func:`common_parser`'s arguments plus ``extra`` config fields."""
    cfg = cfg_cls(rate=args.rate, seed=args.seed, scanner_no=args.scanner_no, trigger=args.trigger,
                  faults=parse_faults(args.faults), **extra)  # fmt: skip
    return run_cli(sim_cls(port_from_args(args), cfg, args.truth), args.count)
