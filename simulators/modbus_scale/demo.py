"""``for_demo``: a simulated indicator standing in for the device a config names."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

from drivers.modbus_scale.config import ModbusScaleConfig
from simulators.modbus_scale.config import ScaleSimConfig
from simulators.modbus_scale.sim import ScaleSim

#: Light faults, so the demo shows rejects being counted and readings still arriving.
DEMO_FAULTS = {"exception": 0.01, "overload": 0.03}
#: Seconds a weight must have been stable before the stop to count as expected.
SETTLE_MARGIN_S = 0.5


class DemoScale:
    """A running :class:`ScaleSim` with the ``DemoSimulator`` interface."""

    def __init__(self, sim: ScaleSim) -> None:
        self.sim = sim
        self._stopped_at: float | None = None

    def start(self) -> None:
        """Parcels start arriving on every unit."""
        self.sim.run_auto()

    def stop(self) -> None:
        """Stop serving; release the pty or socket."""
        self._stopped_at = time.monotonic()
        self.sim.stop()

    def expected(self) -> int:
        """Settled weights the agent must have published (stable for a while before now/stop)."""
        until = (self._stopped_at or time.monotonic()) - SETTLE_MARGIN_S
        return sum(len(self.sim.settled(u, until)) for u in self.sim.units)

    def describe(self) -> str:
        """Where the simulated indicator is."""
        return self.sim.describe()


def sim_config(cfg: ModbusScaleConfig, rate: float, seed: int) -> ScaleSimConfig:
    """The simulator matching a driver config (same map, units and link)."""
    transport: Literal["rtu", "rtu-tcp", "tcp"] = "rtu"
    host, port, link = "127.0.0.1", 0, None
    if cfg.transport == "tcp":
        transport, host, port = "tcp", cfg.host or host, cfg.tcp_port
    elif cfg.port and cfg.port.startswith("socket://"):
        host, _, port_s = cfg.port.removeprefix("socket://").rpartition(":")
        transport, port = "rtu-tcp", int(port_s)
    else:
        link = Path(str(cfg.port))
    faults = dict(DEMO_FAULTS, crc=0.02) if transport != "tcp" else dict(DEMO_FAULTS)
    return ScaleSimConfig(
        transport=transport, units=tuple(cfg.units), registers=cfg.registers, link=link,
        host=host, port=port, baudrate=cfg.baudrate, auto=False,
        rate=max(rate / len(cfg.units), 0.05), seed=seed, faults=faults,
    )  # fmt: skip


def for_demo(device_id: str, cfg: ModbusScaleConfig, rate: float, seed: int) -> DemoScale:
    """A simulated indicator serving at ``cfg``'s port, empty until ``start()``."""
    del device_id
    sim_cfg = sim_config(cfg, rate, seed)
    if sim_cfg.link is not None:
        sim_cfg.link.parent.mkdir(parents=True, exist_ok=True)
    return DemoScale(ScaleSim(sim_cfg).start())
