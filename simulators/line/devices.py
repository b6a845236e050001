"""The line's device hook wired to the real device simulators: tunnel heads and a scale.

:func:`line_devices` starts, for a :class:`LineConfig`, one SICK CLV/Lector simulator per
tunnel head (``simulators.sick_clv``: CoLa A result telegrams ``STX gate;count;code;... ETX``
with the gate counter, ``NoRead`` for a no-read; ``tunnel_1`` on a pty, the other heads on
TCP ``socket://`` ports) and one Toledo continuous-output indicator (``simulators.
toledo_continuous``, on a pty, streaming at ``scale_hz``), and returns the :data:`Sink` s for
:func:`~simulators.line.drive` plus the agent's ``[devices.*]`` and ``[stations.*]`` TOML.

Feed ``drive`` with :meth:`LineDevices.telegrams` (not ``LineSim.readings`` directly): it
groups the codes one head reports for one gate into one telegram (as a tunnel head sends
them) and turns the scale's readings into loads: the parcel is placed ``lead_ms`` before the
line's stable reading, so the indicator streams motion frames for ``lead_ms`` and then the
stable weight, which the agent's driver publishes once (publish on settle). The line's own
motion readings are therefore not sent one by one: the indicator's motion frames stand for
them, and the driver never publishes motion (:func:`wire_readings`).

The agent assigns ids, ``seq`` and ``mono_ns``: the n-th reading the agent publishes for a
device is the n-th reading written here (:attr:`LineDevices.written` keeps each one's wall time
and ``(kind, value)``), and results compare with the truth by code, weight, gate and order.
"""

from __future__ import annotations

import heapq
import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simulators._scale_model import Display, Timing
from simulators.line.model import LineConfig
from simulators.line.run import Sink
from simulators.pty_port import PtyPort
from simulators.sick_clv import ClvSim, ClvSimConfig
from simulators.toledo_continuous import ToledoSim, ToledoSimConfig
from simulators.tunnel.model import SimPort
from simulators.tunnel.model import Truth as TunnelTruth
from simulators.tunnel.tcp_port import TcpPort

_MS = 1_000_000
#: The indicator's Max: above the station's max_weight_g, so overweight parcels are weighed.
CAPACITY_G = 60_000.0


def wire_readings(readings: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The readings the agent can publish: all but the scale's motion values."""
    return [r for r in readings if not (r["kind"] == "weight" and r.get("stable") is False)]


def _toml(table: str, values: dict[str, Any]) -> str:
    body = "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items() if v is not None)
    return f"[{table}]\n{body}"


@dataclass
class LineDevices:
    """The running simulators of one line, their sinks and what was written to them."""

    cfg: LineConfig
    heads: dict[str, ClvSim]
    scale: ToledoSim
    lead_ms: int
    #: Per device, one ``(wall time, kind, value)`` per reading the agent must publish.
    written: dict[str, list[tuple[float, str, str | float | None]]] = field(default_factory=dict)
    #: Every reading of the line by id (the truth's reading ids resolve here).
    by_id: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def sinks(self) -> dict[str, Sink]:
        """One sink per device, for :func:`~simulators.line.drive`."""
        sinks: dict[str, Sink] = {h: self._head_sink(h) for h in self.heads}
        sinks["scale_1"] = self._scale_sink
        return sinks

    def telegrams(self, readings: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """``readings`` as device actions in time order: one telegram per head and gate (its
        ``codes``), one load per stable weight, ``lead_ms`` early; motion values dropped."""
        heap: list[tuple[int, int, dict[str, Any]]] = []
        pending: dict[str, Any] | None = None
        n = 0
        for r in readings:
            self.by_id[r["id"]] = r
            if r["kind"] == "weight":
                if r.get("stable") is False:
                    continue
                item = {**r, "mono_ns": r["mono_ns"] - self.lead_ms * _MS}
            else:
                key = (r["device"], r["mono_ns"], r.get("gate"))
                if pending is not None and pending["key"] == key:
                    pending["codes"].append(r["value"] if r["kind"] == "barcode" else None)
                    continue
                item = pending = {**r, "key": key, "codes": [r["value"]]}
                if r["kind"] == "noread":
                    pending["codes"] = [None]
            n += 1
            heapq.heappush(heap, (item["mono_ns"], n, item))
            while heap and heap[0][0] < r["mono_ns"] - 2 * self.lead_ms * _MS:
                yield heapq.heappop(heap)[2]
        while heap:
            yield heapq.heappop(heap)[2]

    def _head_sink(self, head: str) -> Sink:
        sim = self.heads[head]

        def sink(r: dict[str, Any]) -> None:
            codes = [c for c in r["codes"] if c is not None] or [sim.clv.noread]
            data = sim.telegram(codes, r.get("gate"))
            values = tuple(c for c in r["codes"] if c is not None) or (None,)
            now = time.time()
            sim.out(data, TunnelTruth(r.get("gate") or 0, "result", values, r.get("gate"), t=now))
            log = self.written.setdefault(head, [])
            log += [(now, "barcode" if v else "noread", v) for v in values]

        return sink

    def _scale_sink(self, r: dict[str, Any]) -> None:
        grams = float(r["value"])
        self.scale.model.place(grams)
        due = time.time() + self.lead_ms / 1000  # the weight is stable (and streamed) from then
        self.written.setdefault("scale_1", []).append((due, "weight", grams))

    def agent_toml(self) -> str:
        """The agent's ``[devices.*]`` and ``[stations.<station>]`` tables for this line."""
        parts = []
        for head, sim in self.heads.items():
            clv = {"type": "sick_clv", "port": sim.port.url, "header_fields": ["gate", "count"]}
            parts.append(_toml(f"devices.{head}", clv))
        scale = {
            "type": "toledo_continuous",
            "port": str(self.scale.port.link),
            "max_capacity_g": CAPACITY_G,
        }
        parts.append(_toml("devices.scale_1", scale))
        st = self.cfg.station_config().model_dump(mode="json", exclude_defaults=True)
        parts.append(_toml(f"stations.{self.cfg.station}", st))
        return "\n".join(parts)

    def start(self) -> None:
        """Serve every port (the agent may connect from now on)."""
        for sim in self.heads.values():
            sim.start()
        self.scale.start()

    def stop(self) -> None:
        """Stop the simulators and close their ports."""
        for sim in self.heads.values():
            sim.stop()
            sim.port.close()
        self.scale.stop()
        self.scale.port.close()


def line_devices(
    cfg: LineConfig, d: Path, *, tcp: bool = True, scale_hz: float = 50.0, lead_ms: int = 60
) -> LineDevices:
    """Simulators for ``cfg``'s devices, ports plugged (pty symlinks under ``d``), not started.

    Args:
        cfg: the line.
        d: directory for the pty symlinks.
        tcp: heads after the first on TCP ports (else every head on a pty).
        scale_hz: frames per second the indicator streams.
        lead_ms: motion before a weight settles (ms); at least two frames' worth.
    """
    if lead_ms * scale_hz < 2000:
        msg = f"lead_ms {lead_ms} gives fewer than 2 motion frames at {scale_hz} Hz"
        raise ValueError(msg)
    heads: dict[str, ClvSim] = {}
    for k, head in enumerate(cfg.devices()[:-1], 1):
        port: SimPort = TcpPort() if tcp and k > 1 else PtyPort(d / head)
        port.plug()
        sim_cfg = ClvSimConfig(
            seed=cfg.seed * 10 + k, trigger="command", header_fields=("gate", "count"), max_codes=3
        )
        heads[head] = ClvSim(port, sim_cfg)
    scale_port = PtyPort(d / "scale_1")
    scale_port.plug()
    lead = lead_ms / 1000
    scale_cfg = ToledoSimConfig(
        display=Display("kg", 3, 5, CAPACITY_G),
        timing=Timing(motion_s=(lead, lead)),
        rate=scale_hz,
        seed=cfg.seed,
        auto=False,
    )
    return LineDevices(cfg, heads, ToledoSim(scale_port, scale_cfg), lead_ms)
