"""SICK CLV6xx / Lector6xx fixed tunnel scanner over serial or TCP (registry key ``sick_clv``).

A package of three modules:

* :mod:`drivers.sick_clv.telegram`: ``SickClvConfig``, the CoLa A wire format and its pure
  parser (wire format and sources are in that module's docstring);
* :mod:`drivers.sick_clv.driver`: ``SickClvDriver``, which handles heartbeats, answers and the
  software gate;
* :mod:`drivers.tunnel.base` and :mod:`drivers.tunnel.config`: the base shared
  with ``cognex_dataman`` and ``datalogic``: the pyserial URL transport, the read loop,
  fanning one telegram out into readings, and the common settings and field checks.

Port strings are pyserial URLs: ``socket://10.0.3.21:2112`` for the reader's TCP port, or
``/dev/serial/by-id/...`` for its host serial port.
"""

from drivers.sick_clv.driver import SickClvDriver
from drivers.sick_clv.telegram import SickClvConfig

__all__ = ["SickClvConfig", "SickClvDriver"]
