"""The Modbus scale driver: owns one pymodbus sync client and polls every unit on its link."""

from __future__ import annotations

import logging
import socket
import termios
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, NoReturn

from pymodbus.client import ModbusSerialClient, ModbusTcpClient
from pymodbus.exceptions import ModbusException, ModbusIOException
from pymodbus.framer import FramerType

from drivers.base import Driver
from drivers.common.framing import Event, Reject
from drivers.modbus_scale.config import ModbusScaleConfig
from drivers.modbus_scale.frames import (
    REJECTS,
    classify_unanswered,
    complete,
    parse_frame,
    sound_tail,
    to_decoded,
)
from drivers.modbus_scale.poller import Scheduler, UnitState, settle
from drivers.reasons import R
from edge_agent.errors import (
    DeviceInitError,
    DeviceIOError,
    DeviceNotFoundError,
    FrameError,
    in_words,
)
from edge_agent.reading import Decoded

# pymodbus logs every timeout at ERROR through stdlib logging; with no handler configured that
# lands as plain text in the daemon's JSON stderr. The driver logs the same facts structured.
logging.getLogger("pymodbus").addHandler(logging.NullHandler())

Client = ModbusSerialClient | ModbusTcpClient


class _TcpClient(ModbusTcpClient):
    """pymodbus's TCP client, keeping why ``connect()`` failed (pymodbus only logs it)."""

    connect_error: OSError | None = None

    def connect(self) -> bool:
        """As pymodbus's, with the error kept for the device's reason."""
        if self.socket:
            return True
        params = self.comm_params
        try:
            self.socket = socket.create_connection(
                (params.host, params.port),
                timeout=params.timeout_connect,
                source_address=params.source_address,
            )
        except OSError as err:
            self.connect_error = err
            self.close()  # type: ignore[no-untyped-call]
        return self.socket is not None


class _NoResponseError(ModbusIOException):
    """Raised from the packet hook: the bytes that came cannot become the response."""


@dataclass(frozen=True, slots=True)
class Poll:
    """One request on the link, for tests and diagnostics (``ModbusScaleDriver.polls``)."""

    unit: int
    start: float
    end: float
    outcome: str


class ModbusScaleDriver(Driver[ModbusScaleConfig]):
    """Weight indicators on one Modbus link: an RTU bus (several unit ids) or a TCP connection.

    ``read()`` polls the units as they fall due and returns a reading per new stable weight
    (see :mod:`drivers.modbus_scale.poller`). Link errors (``OSError``, ``SerialException``,
    pymodbus ``ConnectionException``) close the client, drop the object and raise
    ``DeviceIOError``; the supervisor reopens with a *new* client (docs/reliability.md M1, M6).
    A unit that times out is that unit's problem (M3), unless none answers for
    ``reopen_after_ms``: then the link is reopened too.
    """

    kind: ClassVar[str] = "modbus_scale"
    REJECTS: ClassVar[frozenset[R]] = REJECTS
    Config = ModbusScaleConfig
    #: Polls kept in :attr:`polls`.
    POLL_HISTORY = 4096

    def __init__(self, device_id: str, cfg: ModbusScaleConfig) -> None:
        super().__init__(device_id, cfg)
        self._client: Client | None = None
        self._rx = b""
        #: The response ADU pymodbus was handed, as it came off the wire (a reading's ``raw``).
        self._wire = b""
        self._asking = 0
        self._sched = Scheduler(cfg)
        self._last_answer = 0.0
        self.clients_created = 0
        self.polls: deque[Poll] = deque(maxlen=self.POLL_HISTORY)

    @property
    def address(self) -> str | None:
        """The RTU port, or ``host:port`` of a Modbus TCP device."""
        return self.cfg.where

    @property
    def units(self) -> dict[int, UnitState]:
        """Per-unit state and outcome counters."""
        return self._sched.units

    def open(self) -> None:
        """Create a new pymodbus client and connect it. Raises DeviceNotFoundError/InitError."""
        self.close()
        client = self._new_client()
        if not client.connect():
            client.close()  # type: ignore[no-untyped-call]
            raise self._open_error(getattr(client, "connect_error", None))
        self._client = client
        self.clients_created += 1
        now = time.monotonic()
        self._last_answer = now
        self._sched.restart(now)
        self.log.info("link_opened", link=self.cfg.where, units=self.cfg.units)

    def _open_error(self, err: OSError | None) -> DeviceNotFoundError | DeviceInitError:
        """Why the link did not open, in words ("not present", "connection refused", ...)."""
        cfg = self.cfg
        if cfg.transport == "rtu" and cfg.port and cfg.port.startswith("/"):
            if not Path(cfg.port).exists():
                return DeviceNotFoundError(f"{cfg.port}: not present")
            return DeviceInitError(f"{cfg.port}: cannot open (busy or not a serial port?)")
        why = "cannot connect" if err is None else in_words(err)
        return DeviceNotFoundError(f"{cfg.where}: {why}")

    def _new_client(self) -> Client:
        cfg, timeout = self.cfg, self.cfg.timeout_ms / 1000
        # retries=0: our scheduler retries, counted per unit; reconnect_delay=0: no library
        # auto-reconnect (M2) - a broken link is a new client object, made by open().
        if cfg.transport == "tcp":
            assert cfg.host is not None
            return _TcpClient(
                cfg.host, port=cfg.tcp_port, timeout=timeout, retries=0, reconnect_delay=0,
                trace_packet=self._trace,
            )  # fmt: skip
        assert cfg.port is not None
        return ModbusSerialClient(
            cfg.port, framer=FramerType.RTU, baudrate=cfg.baudrate, bytesize=cfg.bytesize,
            parity=cfg.parity, stopbits=cfg.stopbits, timeout=timeout, retries=0,
            reconnect_delay=0, trace_packet=self._trace,
        )  # fmt: skip

    def _trace(self, sending: bool, data: bytes) -> bytes:
        """pymodbus's packet hook: hand it the sound frame, or end a wait that cannot succeed.

        pymodbus passes the whole buffer received so far. A complete answer that is not a
        sound frame for the unit asked (CRC error, wrong unit id) ends the request at once
        instead of after the timeout, so a noisy line costs the other units no bus time.
        """
        if sending:
            return data
        self._rx = bytes(data)
        cfg, unit = self.cfg, self._asking
        tail = sound_tail(self._rx, unit, cfg.transport, cfg.registers.count)
        if tail is not None:
            size = 6 + int.from_bytes(tail[4:6], "big") if cfg.transport == "tcp" else len(tail)
            self._wire = tail[:size]
            return tail
        if complete(self._rx, cfg.transport, cfg.registers.count):
            msg = f"unit {unit}: {len(self._rx)} bytes, no sound response"
            raise _NoResponseError(msg)
        return data

    def close(self) -> None:
        """Close and drop the client (idempotent)."""
        client, self._client = self._client, None
        self._pending.clear()
        if client is not None:
            try:
                client.close()  # type: ignore[no-untyped-call]
            except (OSError, ModbusException) as err:
                self.log.debug("link_close_failed", error=str(err))

    def _read_events(self, timeout: float) -> Sequence[Event | Decoded]:
        if self._client is None:
            msg = f"{self.cfg.where}: not open"
            raise DeviceIOError(msg)
        now = time.monotonic()
        st = self._sched.next_due(now)
        if st is None:
            time.sleep(min(timeout, self._sched.wait_s(now)))
            return []
        return self._poll(self._client, st)

    def _poll(self, client: Client, st: UnitState) -> Sequence[Event | Decoded]:
        t0 = time.monotonic()
        self._rx, self._wire, self._asking = b"", b"", st.unit
        try:
            rsp = self._request(client, st.unit)
        except ModbusIOException as err:  # no valid answer within the timeout
            return self._no_answer(st, t0, str(err))
        except (ModbusException, OSError, termios.error) as err:  # the link itself broke
            self._link_lost(st, t0, err)
        except Exception as err:  # a library bug must not kill the device thread (T19)
            self.log.exception("link_error_unexpected", unit=st.unit)
            self._link_lost(st, t0, err)
        self._last_answer = time.monotonic()
        if self._sched.answered(st, self._last_answer):
            self.log.info("unit_online", unit=st.unit)
        del rsp  # pymodbus decoded the bytes _trace handed it: they are parsed once, here
        return self._answer(st, t0, self._wire)

    def _link_lost(self, st: UnitState, t0: float, err: Exception) -> NoReturn:
        self.close()  # drop the client object: open() makes a new one (M1, M6)
        self._record(st, t0, "link_error")
        known = isinstance(err, OSError | ModbusException | termios.error)
        why = in_words(err, self.cfg.port) if known else f"{type(err).__name__}: {err}"
        msg = f"{self.cfg.where}: {why}"
        raise DeviceIOError(msg) from err

    def _request(self, client: Client, unit: int) -> Any:
        m = self.cfg.registers
        if m.function == "input":
            return client.read_input_registers(m.start, count=m.count, device_id=unit)
        return client.read_holding_registers(m.start, count=m.count, device_id=unit)

    def _answer(self, st: UnitState, t0: float, frame: bytes) -> Sequence[Event | Decoded]:
        """The reading of a response ADU once its unit has settled on a new weight."""
        try:
            _unit, sample = parse_frame(frame, self.cfg)
        except FrameError as err:
            return self._failure(st, t0, err.reason, frame, err.detail)
        outcome = settle(st, sample, self.cfg)
        self._record(st, t0, outcome)
        if outcome != "reading":
            return []
        decoded = to_decoded(frame, sample, self.cfg)
        if decoded.stable is None:  # no status bits: settle() found it stable
            decoded = replace(decoded, stable=True)
        return [decoded]

    def _no_answer(self, st: UnitState, t0: float, detail: str) -> Sequence[Event | Decoded]:
        rx, count = self._rx, self.cfg.registers.count
        outcome = classify_unanswered(rx, st.unit, self.cfg.transport, count)
        if rx:
            self._sched.garbled(st, time.monotonic())
        elif self._sched.failed(st, time.monotonic()):
            self.log.warning("unit_offline", unit=st.unit, detail=detail)
        events = self._failure(st, t0, outcome, rx) if rx else self._record(st, t0, outcome)
        silent_s = time.monotonic() - self._last_answer
        if self._sched.all_offline() and silent_s * 1000 >= self.cfg.reopen_after_ms:
            self.close()
            msg = f"{self.cfg.where}: no unit answered for {silent_s:.1f} s"
            raise DeviceIOError(msg)
        return events

    def _failure(
        self, st: UnitState, t0: float, reason: str, data: bytes, detail: str = ""
    ) -> Sequence[Event | Decoded]:
        """Count every failure per unit; hand the first of a run to the base class's rejects."""
        first = st.last_outcome != reason
        self._record(st, t0, reason)
        return [Reject(reason, data, detail)] if first else []

    def _record(self, st: UnitState, t0: float, outcome: str) -> Sequence[Event | Decoded]:
        st.stats[outcome] += 1
        st.last_outcome = outcome
        self.polls.append(Poll(st.unit, t0, time.monotonic(), outcome))
        return []

    def decode(self, frame: bytes) -> list[Decoded]:
        """One response ADU's weight, unsettled (``read()`` gets readings from the poll)."""
        _unit, sample = parse_frame(frame, self.cfg)
        return [to_decoded(frame, sample, self.cfg)]
