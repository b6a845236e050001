"""Device simulators: the same bytes as the real devices, over real ptys and sockets.

Each ``simulators/<driver>.py`` mirrors ``drivers/<driver>.py``, is runnable by hand
(``python -m simulators.<driver> --help``; it prints the port it serves) and offers
``for_demo(device_id, cfg, rate, seed) -> DemoSimulator`` so ``edge-agent demo`` and the
end-to-end tests can stand it in for the device a config names.

Written once here for all of them: :class:`DemoDevice` (the base of those stand-ins),
:func:`demo_port`, :func:`parse_faults` / :func:`check_faults` (``--faults name=p,...``) and
:func:`serve` (a CLI's run until done or ^C). ``simulators/emitter.py`` holds the truth records,
thread and write loop the frame-writing simulators share.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from simulators.pty_port import PtyPort


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


class _Closable(Protocol):
    def close(self) -> None: ...


class Running(Protocol):
    """A simulator a :class:`DemoDevice` drives: started, stopped, with a port to close."""

    @property
    def port(self) -> _Closable: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...


S = TypeVar("S", bound=Running)


class DemoDevice(Generic[S]):
    """Base of the ``for_demo`` stand-ins (a :class:`DemoSimulator`): starts a simulator,
    stops it and closes its port; subclasses say what it should have produced and where."""

    def __init__(self, sim: S) -> None:
        self.sim = sim

    def start(self) -> None:
        """Start the simulator; it runs in the background until stopped."""
        self.sim.start()

    def stop(self) -> None:
        """Stop the simulator and close (unplug) its port."""
        self.sim.stop()
        self.sim.port.close()


def demo_port(link: str) -> PtyPort:
    """A plugged pty behind ``link`` (the configured port path)."""
    path = Path(link)
    path.parent.mkdir(parents=True, exist_ok=True)
    port = PtyPort(path)
    port.plug()
    return port


def parse_faults(text: str) -> dict[str, float]:
    """``"noise=0.05,garble=0.02,fragment"`` -> probabilities (0.1 where none is given)."""
    out: dict[str, float] = {}
    for part in filter(None, text.split(",")):
        name, _, prob = part.partition("=")
        out[name.strip()] = float(prob or 0.1)
    return out


def check_faults(faults: Iterable[str], valid: Sequence[str]) -> None:
    """ValueError naming the fault modes in ``faults`` that are not in ``valid``."""
    unknown = set(faults) - set(valid)
    if unknown:
        msg = f"unknown fault modes {sorted(unknown)}; valid: {', '.join(valid)}"
        raise ValueError(msg)


def serve(wait: Callable[[], object], *cleanup: Callable[[], object]) -> int:
    """A CLI's run: block in ``wait`` (a counted run, a timer, forever) until it returns or ^C,
    then run each ``cleanup`` step in order; returns the exit code (0)."""
    try:
        wait()
    except KeyboardInterrupt:
        pass
    finally:
        for step in cleanup:
            step()
    return 0


def end_process(proc: subprocess.Popen[bytes], sig: int, wait_s: float) -> None:
    """Send ``sig`` to a server the tests started (SIGKILL for a crash), wait up to ``wait_s``,
    then kill it; returns once it is gone."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
