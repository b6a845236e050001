"""``edge-agent monitor``: the daemon's status, live, full screen, refreshed every second.

Top: devices (state, last reading age, readings and rejects per minute). Middle: queue and
broker. Bottom: a scrolling log of the latest readings and rejects, streamed from the daemon's
control socket (``watch``). Quit with ``q`` (or Ctrl-C): in a terminal, keys are read without
waiting for Enter (cbreak mode, restored on exit).
"""

from __future__ import annotations

import json
import os
import select
import socket
import sys
import termios
import threading
import time
import tty
from collections import deque
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from edge_agent import control
from edge_agent.cli.common import age, ago, size
from edge_agent.config import AgentConfig


class _Feed(threading.Thread):
    """Keeps the latest readings/rejects from the daemon's watch stream."""

    def __init__(self, cfg: AgentConfig, size: int = 12) -> None:
        super().__init__(name="monitor-feed", daemon=True)
        self.path = cfg.control.path()
        self.lines: deque[Text] = deque(maxlen=size)
        #: Width of the device column: the longest configured id (set from each status).
        self.width = 12

    def run(self) -> None:
        while True:
            try:
                self._stream()
            except (OSError, ValueError):
                time.sleep(1)

    def _stream(self) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(self.path))
            s.sendall(b'{"cmd": "watch"}\n')
            for line in s.makefile("rb"):
                ev = json.loads(line)
                if ev.get("event") == "reading":
                    unit = f" {ev['unit']}" if ev.get("unit") else ""
                    self.lines.append(
                        Text(
                            f"{ev['ts'][11:23]} {ev['device']:{self.width}} seq={ev['seq']:<6} "
                            f"{ev['kind']:8} {ev['value']}{unit}"
                        )
                    )
                elif ev.get("event") == "reject":
                    self.lines.append(
                        Text(
                            f"REJECT {ev['device']:{self.width}} {ev['reason']:9} {ev['raw'][:48]}",
                            style="bold red",
                        )
                    )


class _Keys:
    """Keys pressed in the terminal, read without blocking; a no-op when stdin is no terminal."""

    def __init__(self) -> None:
        self._fd: int | None = None
        self._saved: list[Any] | None = None

    def __enter__(self) -> _Keys:
        if sys.stdin.isatty():
            self._fd = sys.stdin.fileno()
            self._saved = termios.tcgetattr(self._fd)
            tty.setcbreak(self._fd)  # one key at a time, no echo; Ctrl-C still interrupts
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._fd is not None and self._saved is not None:
            termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved)

    def wait(self, seconds: float) -> str:
        """The keys pressed within ``seconds`` (returns at the first key), or ``""``."""
        if self._fd is None:
            time.sleep(seconds)
            return ""
        ready, _, _ = select.select([self._fd], [], [], seconds)
        return os.read(self._fd, 32).decode(errors="replace") if ready else ""


def _devices(st: dict[str, Any]) -> Table:
    t = Table(expand=True, title="devices")
    width = max((len(d) for d in st["devices"]), default=6)
    t.add_column("device", min_width=width, no_wrap=True)
    for col in ("type", "state", "last reading", "readings/min", "rejects/min", "rejects"):
        t.add_column(col)
    for dev_id, d in st["devices"].items():
        style = "green" if d["state"] == "connected" else "bold red"
        state = d["state"] + (f" ({d['reason'][:40]})" if d["reason"] else "")
        rejects = ", ".join(f"{k}={v}" for k, v in d["rejects"].items()) or "-"
        t.add_row(
            dev_id,
            d["type"],
            Text(state, style=style),
            ago(d["last_reading_age_s"])
            + (
                f" ({d['last_value']})"
                if d.get("last_value") and d["last_reading_age_s"] is not None
                else ""
            ),
            str(d["readings_per_min"]),
            str(d["rejects_per_min"]),
            rejects,
        )
    return t


def render(st: dict[str, Any] | None, feed: list[Text], error: str = "") -> Group:
    """One frame of the monitor."""
    if st is None:
        return Group(
            Text("q to quit", style="dim"),
            Panel(Text(f"daemon not answering: {error}", style="bold red")),
        )
    q, b = st["queue"], st["broker"]
    state = f"{'connected' if b['connected'] else 'DISCONNECTED'} {b['host']}:{b['port']}"
    if not b["connected"]:
        why, retry = b.get("reason") or b.get("last_error"), b.get("next_retry_in_s")
        state += f" ({why})" if why else ""
        state += "; trying now" if retry is None else f"; next try in {retry:.1f} s"
    broker = Text(state, style="green" if b["connected"] else "bold red")
    info = Text.assemble(
        f"agent {st['agent']} {st['site']}/{st['line']}  up {age(st['uptime_s'])}\n",
        f"queue: {q['pending']} pending, oldest {age(q['oldest_pending_age_s'])}, "
        f"{size(q['disk_bytes'])} on disk, dropped {q['dropped']}\nbroker: ",
        broker,
        f", last PUBACK {ago(b['last_puback_age_s'])}, {b['acked_rows']} acked, "
        f"rejects {b['rejects'] or 'none'}",
    )
    log = Panel(Group(*feed) if feed else Text("waiting for readings…"), title="latest")
    return Group(
        Text("q to quit", style="dim"), _devices(st), Panel(info, title="queue / broker"), log
    )


def run_monitor(cfg: AgentConfig, once: bool = False) -> int:
    """Refresh every second until ``q`` or Ctrl-C (``once``: print one frame and exit)."""
    feed = _Feed(cfg)
    feed.start()

    def frame() -> Group:
        try:
            st = control.request(cfg.control.path(), {"cmd": "status"})["status"]
        except (OSError, ValueError, KeyError) as err:
            return render(None, [], str(err))
        feed.width = max((len(d) for d in st["devices"]), default=12)
        return render(st, list(feed.lines))

    if once:
        time.sleep(1.0)
        Console().print(frame())
        return 0
    with _Keys() as keys, Live(frame(), refresh_per_second=2, screen=True) as live:
        try:
            next_frame = time.monotonic() + 1.0
            while "q" not in keys.wait(max(0.0, next_frame - time.monotonic())).lower():
                if time.monotonic() >= next_frame:
                    next_frame = time.monotonic() + 1.0
                    live.update(frame())
        except KeyboardInterrupt:
            pass
    return 0
