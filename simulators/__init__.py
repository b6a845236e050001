"""Device simulators: the same bytes as the real devices, over real ptys and sockets.

Each ``simulators/<driver>.py`` mirrors ``drivers/<driver>.py``, is runnable by hand
(``python -m simulators.<driver> --help``; it prints the port it serves) and offers
``for_demo(device_id, cfg, rate, seed) -> DemoSimulator`` so ``edge-agent demo`` and the
end-to-end tests can stand it in for the device a config names.
"""

from __future__ import annotations

import sys
from typing import Protocol


class DemoSimulator(Protocol):
    """What the demo runner needs from a simulator standing in for one configured device."""

    def start(self) -> None:
        """Start producing readings in the background."""

    def stop(self) -> None:
        """Stop producing readings and release ports."""

    def expected(self) -> int:
        """How many readings the agent should publish for what was produced so far."""

    def describe(self) -> str:
        """One line for the demo output: what is simulated and where."""


def announce(port: str | None = None, host: str | None = None, tcp_port: int | None = None) -> None:
    """Tell the technician, on stderr, what to put in the device's config and how to stop.

    ``port``: a serial port path or pyserial URL (``port = "/dev/pts/7"``); ``host`` and
    ``tcp_port``: a Modbus TCP device (``host = "127.0.0.1"`` and ``tcp_port = 5020``). stdout
    keeps its first line (the port alone) for scripts.
    """
    if port is not None:
        print(f'configure port = "{port}"', file=sys.stderr, flush=True)
    if host is not None:
        print(f'configure host = "{host}", tcp_port = {tcp_port}', file=sys.stderr, flush=True)
    print("Ctrl-C to stop", file=sys.stderr, flush=True)
