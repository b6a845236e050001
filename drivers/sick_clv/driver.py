"""``SickClvDriver``: a SICK CLV/Lector on serial or TCP (telegrams: :mod:`.telegram`).

How telegrams are handled:

* **result**: one reading per code, each with the whole telegram as ``raw`` and the gate
  counter as ``gate`` when the device sends one (see :mod:`drivers.tunnel.base`). A repeated
  telegram of the same gate is the reject ``duplicate``.
* **heartbeat**: counted in :attr:`SickClvDriver.heartbeats`, not published. Publishing it
  would put a row in the queue and a message on the broker every interval and say nothing
  about parcels. Link health is shown instead by ``heartbeat_timeout_s``: silence raises
  DeviceIOError, so the device state goes to ``reconnecting`` and the link is reopened. Set
  ``heartbeat_publish = true`` to publish ``heartbeat`` readings anyway.
* **answer** (``sAN``/``sFA``/...): counted in :attr:`answers` by type and method (``sFA`` by
  type only; its error code is logged). A refused gate (``sAN mTCgateon 0``) or an error
  answer (``sFA``) is logged as a warning.
"""

from __future__ import annotations

import math
import time
from typing import ClassVar

from drivers.common.framing import Framer, StxEtxFramer
from drivers.reasons import FRAMING, R
from drivers.sick_clv.telegram import SickClvConfig, parse_telegram
from drivers.tunnel.base import TunnelDriver
from edge_agent.errors import DeviceIOError
from edge_agent.reading import Decoded

GATE_ON = b"\x02sMN mTCgateon\x03"
GATE_OFF = b"\x02sMN mTCgateoff\x03"


class SickClvDriver(TunnelDriver[SickClvConfig]):
    """A SICK CLV6xx / Lector6xx fixed scanner (CoLa A, STX/ETX).

    Args:
        device_id: the config id (``[devices.<id>]``).
        cfg: validated :class:`~drivers.sick_clv.telegram.SickClvConfig`.
    """

    kind: ClassVar[str] = "sick_clv"
    REJECTS: ClassVar[frozenset[R]] = FRAMING | {R.GARBLED, R.COUNT_MISMATCH, R.DUPLICATE}
    Config = SickClvConfig

    def __init__(self, device_id: str, cfg: SickClvConfig) -> None:
        super().__init__(device_id, cfg)
        #: Heartbeat telegrams received.
        self.heartbeats = 0
        #: Software gates opened (``sMN mTCgateon`` sent).
        self.gates_sent = 0
        self._next_gate = 0.0
        self._gate_off_at: float | None = None

    def make_framer(self) -> Framer:
        """STX/ETX framer with the configured limits."""
        return StxEtxFramer(self.cfg.max_frame, self.cfg.inter_byte_timeout_ms / 1000)

    def decode(self, frame: bytes) -> list[Decoded]:
        """The readings of one telegram; answers and heartbeats are counted. Raises FrameError."""
        telegram = parse_telegram(frame, self.cfg)
        if telegram.kind == "answer":
            self._answer(telegram.answer, frame)
        elif telegram.kind == "heartbeat":
            self.heartbeats += 1
            return list(telegram.readings) if self.cfg.heartbeat_publish else []
        return list(telegram.readings)

    def _answer(self, tokens: tuple[str, ...], frame: bytes) -> None:
        self.answers[tokens[0] if tokens[0] == "sFA" else " ".join(tokens[:2])] += 1
        refused = tokens[0] == "sAN" and len(tokens) > 2 and tokens[-1] == "0"
        if tokens[0] == "sFA" or refused:
            self.log.warning("cola_error", answer=" ".join(tokens), frame_hex=frame.hex(" "))
        else:
            self.log.debug("cola_answer", answer=" ".join(tokens))

    def _on_open(self) -> None:
        self._next_gate = time.monotonic()
        self._gate_off_at = None

    def _idle(self, now: float) -> None:
        cfg = self.cfg
        silent = now - self.last_rx
        if cfg.heartbeat_timeout_s and silent > cfg.heartbeat_timeout_s:
            msg = f"{cfg.port}: no data for {silent:.1f} s (heartbeat lost)"
            raise DeviceIOError(msg)

    def _watch_due(self, now: float) -> float:
        limit = self.cfg.heartbeat_timeout_s
        return self.last_rx + limit - now if limit else math.inf

    def _due(self, now: float) -> float:
        if self.cfg.gate_trigger != "software":
            return math.inf
        return (self._next_gate if self._gate_off_at is None else self._gate_off_at) - now

    def _tick(self, now: float) -> None:
        cfg = self.cfg
        if cfg.gate_trigger != "software":
            return
        if self._gate_off_at is not None and now >= self._gate_off_at:
            self.write(GATE_OFF)
            self._gate_off_at = None
        if self._gate_off_at is None and now >= self._next_gate:
            self.write(GATE_ON)
            self.gates_sent += 1
            self._gate_off_at = now + cfg.gate_open_ms / 1000
            period = cfg.gate_period_ms / 1000
            self._next_gate += period
            if self._next_gate < now:  # fell behind (a stalled read): skip, do not burst
                self._next_gate = now + period
