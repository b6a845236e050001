"""Configuration of a Modbus weight indicator: the link, the units on it and the register map.

There is no standard register map for weight indicators (docs/protocols.md §3.4), so every address,
type, word/byte order, scale and status bit is a key here, and the simulator serves the same
:class:`RegisterMap`. The ``[registers]`` table itself is required: a built-in default map once
read an indicator's gram register as kilograms without a word of warning. Addresses are PDU
addresses (0-based): holding register ``40008`` is ``7``. All registers of the map are read
with ONE request per unit and poll, so the map must span at most :data:`MAX_SPAN` registers
(the CAS CI-600D allows 32 per query).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from drivers.common.link import stable_name_problem
from edge_agent.model import DeviceConfig, StrictModel, bare_host_problem

#: Registers one FC03/FC04 request may read (Modbus application protocol spec, §6.3).
MAX_SPAN = 125
#: Grams per unit of the indicator's weight register.
UNIT_GRAMS = {"g": 1.0, "kg": 1000.0, "lb": 453.59237}
#: Registers per weight type.
TYPE_WORDS = {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2}

Address = Annotated[int, Field(ge=0, le=65535)]
Bit = Annotated[int, Field(ge=0, le=15)] | None
UnitId = Annotated[int, Field(ge=1, le=247)]


def _any_set(*bits: int | None) -> bool:
    return any(b is not None for b in bits)


class RegisterMap(StrictModel):
    """Where and how an indicator keeps its weight (``[devices.<id>.registers]``).

    Word and byte order, as libmodbus names them (``A`` = most significant byte)::

        ABCD  word_order = "big",    byte_order = "big"      (Fairbanks PR 5410: MSB first)
        CDAB  word_order = "little", byte_order = "big"
        BADC  word_order = "big",    byte_order = "little"
        DCBA  word_order = "little", byte_order = "little"

    weight in grams = raw * scale / 10**decimals * grams-per-unit; ``decimals`` comes from
    ``decimals_register`` when that is set (its value must be 0..6).
    """

    function: Literal["holding", "input"] = "holding"
    weight_register: Address = 0
    weight_type: Literal["int16", "uint16", "int32", "uint32", "float32"] = "int32"
    word_order: Literal["big", "little"] = "big"
    byte_order: Literal["big", "little"] = "big"
    unit: Literal["g", "kg", "lb"] = "kg"
    scale: float = Field(default=1.0, gt=0)
    decimals: int = Field(default=0, ge=0, le=6)
    decimals_register: Address | None = None
    status_register: Address | None = None
    stable_bit: Bit = None
    motion_bit: Bit = None
    overload_bit: Bit = None
    zero_bit: Bit = None
    under_zero_bit: Bit = None

    @field_validator("scale")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            msg = "a finite number > 0"
            raise ValueError(msg)
        return v

    @model_validator(mode="after")
    def _consistent(self) -> RegisterMap:
        bits = (self.stable_bit, self.motion_bit, self.overload_bit, self.zero_bit)
        if self.status_register is None and _any_set(*bits, self.under_zero_bit):
            msg = "status bits need status_register"
            raise ValueError(msg)
        if self.count > MAX_SPAN:
            msg = f"registers {self.start}..{self.start + self.count - 1} span more than {MAX_SPAN}"
            raise ValueError(msg)
        return self

    @property
    def words(self) -> int:
        """Registers holding the weight value."""
        return TYPE_WORDS[self.weight_type]

    def _addresses(self) -> list[int]:
        regs = [self.weight_register, self.weight_register + self.words - 1]
        return regs + [a for a in (self.decimals_register, self.status_register) if a is not None]

    @property
    def start(self) -> int:
        """First register of the one block read per poll."""
        return min(self._addresses())

    @property
    def count(self) -> int:
        """Registers in the block read per poll."""
        return max(self._addresses()) - self.start + 1

    @property
    def has_stability(self) -> bool:
        """True when the status register tells stable from motion."""
        return self.stable_bit is not None or self.motion_bit is not None


class ModbusScaleConfig(DeviceConfig):
    """``type = "modbus_scale"``: one link (serial bus or TCP connection) with its unit ids."""

    type: Literal["modbus_scale"]
    transport: Literal["rtu", "tcp"] = "rtu"
    port: str | None = Field(default=None, min_length=1)
    host: str | None = Field(default=None, min_length=1, max_length=253)
    tcp_port: int = Field(default=502, ge=1, le=65535)
    baudrate: Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200] = 19200
    bytesize: Literal[7, 8] = 8
    parity: Literal["N", "E", "O"] = "E"
    stopbits: Literal[1, 2] = 1
    units: list[UnitId] = Field(default_factory=lambda: [1], min_length=1, max_length=32)
    registers: RegisterMap
    poll_ms: int = Field(default=200, ge=20, le=60_000)
    timeout_ms: int = Field(default=300, ge=20, le=10_000)
    retries: int = Field(default=1, ge=0, le=5)
    offline_probe_ms: int = Field(default=1000, ge=100, le=600_000)
    reopen_after_ms: int = Field(default=5000, ge=1000, le=600_000)
    min_weight_g: float = Field(default=20.0, ge=0)
    min_change_g: float = Field(default=0.0, ge=0)
    max_weight_g: float = Field(default=60_000.0, gt=0)
    settle_polls: int = Field(default=3, ge=2, le=50)

    missing_hints: ClassVar[dict[str, str]] = {
        "registers": (
            "a [registers] table with the indicator's register map, from its manual. Weight "
            "indicators have no standard map, and a built-in default once produced weights "
            "1000x off without a warning (`python -m simulators.modbus_scale --help` prints "
            "an example map to adapt)"
        )
    }

    @field_validator("registers", mode="before")
    @classmethod
    def _map_says_scale(cls, v: object) -> object:
        """The keys that set the weight's scale have no default in a config file: an empty or
        partial ``[registers]`` table once gave weights 1000x off without a warning."""
        if not isinstance(v, Mapping):
            return v
        missing = [k for k in ("weight_register", "unit") if k not in v]
        if v.get("weight_type", "int32") != "float32" and not (
            "decimals" in v or "decimals_register" in v
        ):
            missing.append("decimals (or decimals_register)")
        if missing:
            msg = (
                f"the indicator's map from its manual, with {', '.join(missing)}: these set "
                "the weight's scale and have no default (a wrong unit or decimal count gives "
                "weights 10x to 1000x off)"
            )
            raise ValueError(msg)
        return v

    @field_validator("host")
    @classmethod
    def _bare_host(cls, v: str | None) -> str | None:
        problem = None if v is None else bare_host_problem(v, "tcp_port")
        if problem is not None:
            raise ValueError(problem)
        return v

    @field_validator("port")
    @classmethod
    def _stable_name(cls, v: str | None) -> str | None:
        problem = None if v is None else stable_name_problem(v)
        if problem is not None:
            raise ValueError(problem)
        return v

    @field_validator("units")
    @classmethod
    def _unique(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            msg = f"unit ids without repeats, got {v}"
            raise ValueError(msg)
        return v

    @model_validator(mode="after")
    def _link(self) -> ModbusScaleConfig:
        if self.transport == "rtu" and self.port is None:
            msg = 'transport = "rtu" needs port (a pyserial URL)'
            raise ValueError(msg)
        if self.transport == "tcp" and self.host is None:
            msg = 'transport = "tcp" needs host'
            raise ValueError(msg)
        return self

    @property
    def where(self) -> str:
        """The link for log lines and errors."""
        return str(self.port) if self.transport == "rtu" else f"{self.host}:{self.tcp_port}"
