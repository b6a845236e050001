"""``edge-agent monitor``: the daemon's status, live, full screen, refreshed every second.

Top: devices (state, last reading age, readings and rejects per minute). Middle: queue and
broker. Bottom: a scrolling log of the latest readings and rejects, streamed from the daemon's
control socket (``watch``). Quit with Ctrl-C.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from edge_agent import control
from edge_agent.cli.common import age
from edge_agent.config import AgentConfig


class _Feed(threading.Thread):
    """Keeps the latest readings/rejects from the daemon's watch stream."""

    def __init__(self, cfg: AgentConfig, size: int = 12) -> None:
        super().__init__(name="monitor-feed", daemon=True)
        self.path = cfg.control.path()
        self.lines: deque[Text] = deque(maxlen=size)

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
                    self.lines.append(
                        Text(
                            f"{ev['ts'][11:23]} {ev['device']:12} seq={ev['seq']:<6} "
                            f"{ev['kind']:8} {ev['value']}"
                        )
                    )
                elif ev.get("event") == "reject":
                    self.lines.append(
                        Text(
                            f"REJECT {ev['device']:12} {ev['reason']:9} {ev['raw'][:48]}",
                            style="bold red",
                        )
                    )


def _devices(st: dict[str, Any]) -> Table:
    t = Table(expand=True, title="devices")
    for col in (
        "device",
        "type",
        "state",
        "last reading",
        "readings/min",
        "rejects/min",
        "rejects",
    ):
        t.add_column(col)
    for dev_id, d in st["devices"].items():
        style = "green" if d["state"] == "connected" else "bold red"
        state = d["state"] + (f" ({d['reason'][:40]})" if d["reason"] else "")
        rejects = ", ".join(f"{k}={v}" for k, v in d["rejects"].items()) or "-"
        t.add_row(
            dev_id,
            d["type"],
            Text(state, style=style),
            age(d["last_reading_age_s"]),
            str(d["readings_per_min"]),
            str(d["rejects_per_min"]),
            rejects,
        )
    return t


def render(st: dict[str, Any] | None, feed: list[Text], error: str = "") -> Group:
    """One frame of the monitor."""
    if st is None:
        return Group(Panel(Text(f"daemon not answering: {error}", style="bold red")))
    q, b = st["queue"], st["broker"]
    broker = Text(
        f"{'connected' if b['connected'] else 'DISCONNECTED'} {b['host']}:{b['port']}",
        style="green" if b["connected"] else "bold red",
    )
    info = Text.assemble(
        f"agent {st['agent']} {st['site']}/{st['line']}  up {age(st['uptime_s'])}\n",
        f"queue: {q['pending']} pending, oldest {age(q['oldest_pending_age_s'])}, "
        f"{q['disk_bytes'] >> 10} KiB on disk, dropped {q['dropped']}\nbroker: ",
        broker,
        f", last PUBACK {age(b['last_puback_age_s'])} ago, {b['acked_rows']} acked, "
        f"rejects {b['rejects'] or 'none'}",
    )
    log = Panel(Group(*feed) if feed else Text("waiting for readings…"), title="latest")
    return Group(_devices(st), Panel(info, title="queue / broker"), log)


def run_monitor(cfg: AgentConfig, once: bool = False) -> int:
    """Refresh every second until Ctrl-C (``once``: print one frame and exit)."""
    feed = _Feed(cfg)
    feed.start()

    def frame() -> Group:
        try:
            st = control.request(cfg.control.path(), {"cmd": "status"})["status"]
        except (OSError, ValueError, KeyError) as err:
            return render(None, [], str(err))
        return render(st, list(feed.lines))

    if once:
        time.sleep(1.0)
        Console().print(frame())
        return 0
    with Live(frame(), refresh_per_second=2, screen=True) as live:
        try:
            while True:
                time.sleep(1.0)
                live.update(frame())
        except KeyboardInterrupt:
            pass
    return 0
