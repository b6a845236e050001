"""SICK CLV6xx / Lector6xx fixed tunnel scanner over serial or TCP (registry key ``sick_clv``).

A package of three modules:

* :mod:`drivers.sick_clv.telegram`: ``SickClvConfig``, the CoLa A wire format and its pure
  parser (wire format and sources are in that module's docstring);
* :mod:`drivers.sick_clv.driver`: ``SickClvDriver``, which handles heartbeats, answers and the
  software gate;
* :mod:`drivers.tunnel.base` and :mod:`drivers.tunnel.config`: the base shared
  with ``cognex_dataman`` and ``datalogic`` (duplicates, answers) and the common settings and
  field checks, on :mod:`drivers.common.stream` (port and read loop).

Port strings (:mod:`drivers.common.link`): ``socket://10.0.3.21:2112`` for the reader's TCP
port, ``listen://0.0.0.0:2112?allow=10.0.3.21`` when the reader connects to the line PC, or
``/dev/serial/by-id/...`` for its host serial port.
"""

from drivers.sick_clv.driver import SickClvDriver
from drivers.sick_clv.telegram import SickClvConfig

__all__ = ["SickClvConfig", "SickClvDriver"]
