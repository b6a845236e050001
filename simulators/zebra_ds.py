"""Simulator of a Zebra DS fixed scanner on a real pty: ``<code id> data CR LF``.

Sends the bytes ``drivers/zebra_ds.py`` reads: a 2-character symbology prefix from the driver's
default table, the code, CR LF; ``NR`` for a no-read. Run by hand (it prints the pty path)::

    python -m simulators.zebra_ds --link /tmp/zebra-1 --rate 5 --count 10
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
from pathlib import Path

from drivers.zebra_ds import ZebraDsConfig
from simulators import DemoDevice, announce, demo_port, serve
from simulators.pty_port import PtyPort

NOREAD = b"NR\r\n"


def ean13(data12: str) -> str:
    """12 digits + the EAN-13 check digit (weights 1,3,1,... from the left)."""
    total = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(data12))
    return data12 + str((10 - total % 10) % 10)


class ZebraSim:
    """A scanner writing one line per read to ``port``; ``sent`` lists (symbology, value)."""

    def __init__(self, port: PtyPort, rate: float = 5.0, seed: int = 1, noread: float = 0.0):
        self.port, self.rate, self.noread = port, rate, noread
        self.rng = random.Random(seed)
        self.sent: list[tuple[str, str | None]] = []
        self._n = seed * 1_000_000
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def item(self) -> tuple[bytes, str, str | None]:
        """The next line, its symbology and code (None: a no-read)."""
        if self.rng.random() < self.noread:
            return NOREAD, "noread", None
        self._n += 1
        kind = self.rng.choice(("C0", "C0", "E0", "d1"))
        value = {"C0": f"SF{self._n:013d}", "E0": ean13(f"{self._n % 10**12:012d}"),
                 "d1": f"DM-{self._n}-{self.rng.randrange(10**6):06d}"}[kind]  # fmt: skip
        return f"{kind}{value}\r\n".encode(), kind, value

    def send(self) -> str | None:
        """Write one line; returns the code (None: a no-read)."""
        line, kind, value = self.item()
        self.port.write(line)
        self.sent.append((kind, value))
        return value

    def start(self, count: int = 0) -> None:
        """Send at ``rate`` per second in the background (``count`` lines, 0: until stopped)."""

        def run() -> None:
            while not self._stop.wait(1 / self.rate) and (not count or len(self.sent) < count):
                self.send()

        self._thread = threading.Thread(target=run, name="zebra-sim", daemon=True)
        self._thread.start()

    def wait(self, drain_s: float = 2.0) -> None:
        """Until ``count`` lines are sent, then until the host has read them (``drain_s`` max)."""
        while self._thread is not None and self._thread.is_alive():
            self._thread.join(0.5)
        deadline = time.monotonic() + drain_s
        while self.port.pending() and time.monotonic() < deadline:
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop sending (the port stays plugged)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)


class DemoZebra(DemoDevice[ZebraSim]):
    """A :class:`ZebraSim` on a pty behind the configured port path (``for_demo``)."""

    def expected(self) -> int:
        """Every line sent is a reading (codes and no-reads)."""
        return len(self.sim.sent)

    def describe(self) -> str:
        """Where the simulated scanner is."""
        return f"Zebra DS scanner on {self.sim.port.path} (symlink {self.sim.port.link})"


def for_demo(device_id: str, cfg: ZebraDsConfig, rate: float, seed: int) -> DemoZebra:
    """A simulated Zebra DS plugged in at ``cfg.port`` (a symlink path), 2 % no-reads."""
    del device_id  # one scanner per device table; its codes carry the seed
    return DemoZebra(ZebraSim(demo_port(cfg.port), rate, seed, noread=0.02))


def main(argv: list[str] | None = None) -> int:
    """Run a simulated Zebra DS on a new pty until interrupted (or ``--count`` lines)."""
    p = argparse.ArgumentParser(prog="python -m simulators.zebra_ds", description=__doc__)
    p.add_argument("--link", type=Path, help="stable symlink to the pty (like /dev/serial/by-id)")
    p.add_argument("--rate", type=float, default=5.0, help="reads per second")
    p.add_argument("--count", type=int, default=0, help="stop after N lines (0: never)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--noread", type=float, default=0.0, help="share of no-reads (0..1)")
    args = p.parse_args(argv)
    port = PtyPort(args.link)
    print(port.plug(), flush=True)
    announce(port.url)
    sim = ZebraSim(port, args.rate, args.seed, args.noread)
    sim.start(args.count)
    return serve(sim.wait, sim.stop, port.close)


if __name__ == "__main__":
    sys.exit(main())
