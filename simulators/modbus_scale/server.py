"""The simulated indicator: a real pymodbus server (RTU on a pty, RTU over TCP, Modbus TCP).

Each unit id is a pymodbus ``SimDevice`` whose register block is the configured map; its
``action`` hook writes the weight model's state into the registers on every request, or
returns an exception code when one is injected. Byte-level faults go through the server's
``trace_packet`` hook, on the response actually sent:

* ``crc``: one bit flipped in the response (RTU: the CRC no longer matches);
* ``wrong_unit``: the response carries another unit id (CRC recomputed);
* ``silent``: no response (the unit is dead or the request was lost);
* ``noise``: 0x00/0xFF bytes before the response; ``short``: the response cut off;
* ``exception``: exception 01/02/03/04/06/0B instead of the registers.

A request for a unit id nobody has is not answered (an RS-485 bus has no one to say so).
"""

from __future__ import annotations

import socket
import struct
import time
from collections import deque
from functools import partial
from typing import TYPE_CHECKING

from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.modbus_scale.frames import crc16
from drivers.modbus_scale.registers import encode_block, status_word
from simulators.modbus_scale.link import LoopThread, PtyCable
from simulators.pty_port import PtyPort

if TYPE_CHECKING:
    from simulators.modbus_scale.sim import ScaleSim

#: Exception codes the ``exception`` fault picks from (docs/protocols.md §3.4).
EXCEPTION_CODES = (0x01, 0x02, 0x03, 0x04, 0x06, 0x0B)


class ScaleServer:
    """The pymodbus server of one :class:`~simulators.modbus_scale.sim.ScaleSim`.

    Args:
        sim: the simulator owning the weight models, faults and truth log.
    """

    def __init__(self, sim: ScaleSim) -> None:
        self.sim = sim
        cfg = sim.cfg
        self.rtu_framed = cfg.transport in ("rtu", "rtu-tcp")
        self.sent: deque[bytes] = deque(maxlen=10_000)
        self.received: deque[bytes] = deque(maxlen=10_000)
        #: (monotonic time, unit, fault or "ok") of every response sent or withheld (T12).
        self.answers: deque[tuple[float, int, str]] = deque(maxlen=100_000)
        self._loop = LoopThread(f"modbus-sim-{cfg.transport}")
        self._server: ModbusSerialServer | ModbusTcpServer | None = None
        self.device_pty: PtyPort | None = None
        self._server_pty: PtyPort | None = None
        self._cable: PtyCable | None = None
        self.port = cfg.port

    # ---- lifecycle ---------------------------------------------------------------
    def start(self) -> None:
        """Plug the ptys (RTU) and start serving."""
        if self.sim.cfg.transport == "rtu":
            self.device_pty = PtyPort(self.sim.cfg.link)
            self.device_pty.plug()
            self._server_pty = PtyPort(None)
            self._server_pty.plug()
            self._cable = PtyCable(self.device_pty, self._server_pty)
        self._loop.run(self._serve())

    async def _serve(self) -> None:
        cfg = self.sim.cfg
        units = self._devices()
        if cfg.transport == "rtu":
            assert self._server_pty is not None
            self._server = ModbusSerialServer(
                units, port=self._server_pty.path, baudrate=cfg.baudrate,
                trace_packet=self._trace,
            )  # fmt: skip
        else:
            framer = FramerType.RTU if self.rtu_framed else FramerType.SOCKET
            self._server = ModbusTcpServer(
                units, framer=framer, address=(cfg.host, self.port), trace_packet=self._trace
            )
        await self._server.serve_forever(background=True)
        if cfg.transport != "rtu":
            self.port = self._server.transport.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    def _devices(self) -> list[SimDevice]:
        m = self.sim.cfg.registers
        block = [SimData(address=m.start, count=m.count, values=0, datatype=DataType.REGISTERS)]
        devices = [
            SimDevice(id=u, simdata=block, action=partial(self._action, u)) for u in self.sim.units
        ]
        return [*devices, SimDevice(id=0, simdata=block)]  # id 0: every other id (not answered)

    def stop_serving(self, reset: bool = True) -> None:
        """Stop the server (TCP: connections reset first); the loop thread stays."""
        if self._server is not None:
            if reset:
                self.reset_connections()
            self._loop.run(self._server.shutdown())  # type: ignore[no-untyped-call]
            self._server = None

    def close(self) -> None:
        """Stop everything and release ptys, sockets and threads."""
        self.stop_serving()
        self._loop.close()
        if self._cable is not None:
            self._cable.close()
        for pty in (self.device_pty, self._server_pty):
            if pty is not None:
                pty.close()

    # ---- request path ------------------------------------------------------------
    async def _action(
        self, unit: int, fc: int, start: int, address: int, count: int,
        registers: list[int], values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:  # fmt: skip
        del fc, address, count, values
        code = self.sim.take_exception(unit)
        if code is not None:
            return ExcCodes(code)
        m = self.sim.served_map
        state = self.sim.state(unit)
        status = status_word(
            m, stable=state.stable, overload=state.overload, zero=state.zero,
            under_zero=state.grams < 0,
        )  # fmt: skip
        words = encode_block(state.grams, m, status=status, decimals=self.sim.decimals)
        registers[m.start - start : m.start - start + m.count] = words
        return None

    def _trace(self, sending: bool, data: bytes) -> bytes:
        if not sending:
            self.received.append(bytes(data))  # the receive buffer so far (pymodbus passes it)
            return data
        if len(data) < 4:
            return data
        unit = data[0] if self.rtu_framed else data[6]
        if unit not in self.sim.units:
            return b""
        fault = self.sim.take_byte_fault(unit)
        self.answers.append((time.monotonic(), unit, fault or "ok"))
        out = bytearray(data)
        if fault == "silent":
            return b""
        if fault == "crc":
            i = self.sim.rng.randrange(1, len(out) - 2 if self.rtu_framed else len(out))
            out[i] ^= 1 << self.sim.rng.randrange(8)
        elif fault == "wrong_unit":
            out = self._readdress(out, unit + 100 if unit <= 147 else unit - 100)
        elif fault == "noise":  # line noise before the frame (0x00/0xFF bursts, §0)
            out[:0] = bytes(self.sim.rng.choice(b"\x00\xff") for _ in range(3))
        elif fault == "short":  # the frame cut off
            del out[self.sim.rng.randrange(2, len(out) - 1) :]
        self.sent.append(bytes(out))
        return bytes(out)

    def _readdress(self, frame: bytearray, unit: int) -> bytearray:
        if not self.rtu_framed:
            frame[6] = unit
            return frame
        body = bytes([unit]) + bytes(frame[1:-2])
        return bytearray(body + crc16(body).to_bytes(2, "little"))

    # ---- link faults -------------------------------------------------------------
    def reset_connections(self) -> None:
        """TCP: abort every client connection with RST (SO_LINGER 0)."""
        if self._server is not None and self.sim.cfg.transport != "rtu":
            self._loop.run(self._rst())

    async def _rst(self) -> None:
        assert self._server is not None
        for handler in list(self._server.active_connections.values()):
            transport = handler.transport
            if transport is None:
                continue
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()  # type: ignore[attr-defined]

    def unplug(self) -> None:
        """RTU: remove the device pty and its symlink. TCP: reset and stop listening."""
        if self.device_pty is not None:
            self.device_pty.unplug()
        else:
            self.stop_serving()

    def replug(self) -> None:
        """RTU: a new pty behind the same symlink. TCP: listen again on the same port."""
        if self.device_pty is not None:
            self.device_pty.plug()
        elif self._server is None:
            self._loop.run(self._serve())
