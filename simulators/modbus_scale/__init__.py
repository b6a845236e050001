"""Simulator of Modbus weight indicators: a real pymodbus server serving the driver's map.

Speaks what ``drivers/modbus_scale`` reads (docs/protocols.md §3.4), through a real pymodbus server:

* ``rtu``: RTU on a pty behind a stable symlink (unplug/replug gives a new ``/dev/pts/N``);
* ``rtu-tcp``: RTU frames over TCP (a transparent serial gateway; driver port ``socket://``);
* ``tcp``: Modbus TCP (MBAP) on 127.0.0.1.

Several unit ids share the link, each with its own platform: parcels of 50 g - 30 kg land,
oscillate (motion bit), settle (stable bit) and leave (docs/protocols.md §3.5). The register map is
the driver's own :class:`~drivers.modbus_scale.config.RegisterMap` (int32/float32, word and
byte order, decimals, status bits). Faults (seedable): CRC-corrupted responses, a unit that
stops answering, a wrong unit id, exception codes 01/02/03/04/06/0B, over-capacity parcels,
word-order mismatch, TCP reset, pty unplug/replug. Every settled weight and every injected
fault goes to :attr:`ScaleSim.truth` (and optionally a JSONL file).

Run by hand::

    python -m simulators.modbus_scale --transport rtu --link /tmp/scale-bus-1 --units 1,2
    python -m simulators.modbus_scale --transport tcp --port 15020 --faults crc=0.05
"""

from simulators.modbus_scale.config import DEFAULT_MAP, FAULTS, ScaleSimConfig, Truth
from simulators.modbus_scale.demo import DemoScale, for_demo
from simulators.modbus_scale.sim import ScaleSim

__all__ = [
    "DEFAULT_MAP",
    "FAULTS",
    "DemoScale",
    "ScaleSim",
    "ScaleSimConfig",
    "Truth",
    "for_demo",
]
