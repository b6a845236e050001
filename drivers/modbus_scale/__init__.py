"""Modbus weight indicators (RTU and TCP) through pymodbus: register map, polling, readings.

Links (docs/protocols.md §3.4)::

    transport = "rtu", port = <pyserial URL>
        /dev/serial/by-id/usb-FTDI_..._if00-port0   USB-RS485 adapter (udev names only)
        /dev/edge/scale-bus-1                        a udev symlink
        socket://<host>:<port>                       RTU frames over TCP (transparent gateway)
        spy:///dev/edge/scale-bus-1?file=/tmp/t.txt  hex trace for a technician
    transport = "tcp", host = <name or address>, tcp_port = 502     Modbus TCP (MBAP)

Design:

* ONE device per link with a list of unit ids: one thread owns the RS-485 bus, so the poller
  schedules bus time and a dead slave costs each healthy one at most one request timeout per
  probe (:mod:`drivers.modbus_scale.poller`). The unit id of a reading is the first byte of its
  ``raw`` RTU frame (byte 7 of a TCP frame).
* Every unit is read with ONE FC03/FC04 request per poll covering the whole register map.
  The reading's ``raw`` is that response ADU as it came off the wire (RTU with its CRC, TCP
  with its MBAP header), parsed once by the driver.
* A reading (kind ``weight``, value in grams, unit ``g``, ``stable``, ``check`` ``crc16`` /
  ``tcp``, ``gate`` None) is emitted once per new stable weight per unit; motion is not.
* Exception responses are values: counted per unit and as rejects named after the code
  (``illegal_address``, ``device_busy``, ...). Timeouts, CRC errors, cut-off frames and
  wrong-unit answers are counted per unit (``driver.units[u].stats``); the first of a run is
  also a reject. A complete answer that is not a sound frame ends its request at once (the
  packet hook), instead of pymodbus waiting out the timeout; junk before a sound frame is
  dropped. No reading is ever built from a frame whose CRC (RTU) or MBAP (TCP) is wrong.
* pymodbus 3.16.1 (first release with pymodbus PR #3008: 3.16.0) is not trusted to revive a
  dead port: any link error drops the client object and ``open()`` makes a new one.
"""

from drivers.modbus_scale.config import ModbusScaleConfig, RegisterMap
from drivers.modbus_scale.driver import ModbusScaleDriver

__all__ = ["ModbusScaleConfig", "ModbusScaleDriver", "RegisterMap"]
