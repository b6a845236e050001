"""Simulator of a SICK CLV6xx / Lector6xx fixed scanner: CoLa A over TCP or a pty.

It speaks the bytes :mod:`drivers.sick_clv` reads (docs/protocols.md §1.1)::

    STX [gate;] [count;] SF1000000000004;YT1000000000005 ETX    one result per reading gate
    STX [gate;] [count;] NoRead ETX                              no-read (fault ``noread``)
    STX HB ETX                      heartbeat every heartbeat_s, restarted after each telegram
    host STX sMN mTCgateon ETX   -> STX sAN mTCgateon 1 ETX      the gate opens
    host STX sMN mTCgateoff ETX  -> STX sAN mTCgateoff 1 ETX     then the gate's result
    host anything else           -> STX sFA 1 ETX                [U] error code not verified

Each gate holds 1 to ``max_codes`` labels: courier waybills and SSCCs, unique per simulator.
Besides the common faults of :mod:`simulators.tunnel.engine`, there is ``double_stx`` (STX
STX telegram ETX, which the host must count as ``partial`` and still read). With a ``count``
field, ``garble`` sometimes sends a wrong code count (``count_mismatch``). Otherwise it puts a
control byte in the telegram (``garbled``).

The simulator loop and faults (``engine``), its data model (``model``), the CLI runner and
the TCP port live in :mod:`simulators.tunnel`, shared with ``simulators.cognex_dataman`` and
``simulators.datalogic``.

Run by hand (prints the URL it serves)::

    python -m simulators.sick_clv --tcp 2112 --rate 5 --header gate,count --heartbeat-s 1 \\
        --faults noise=0.05,late=0.05,duplicate=0.05
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from drivers.sick_clv import SickClvConfig
from simulators.tunnel.engine import TunnelSim
from simulators.tunnel.model import SimConfig, SimPort, Truth, waybill
from simulators.tunnel.runner import DEMO_FAULTS, DemoTunnel, cli_main, common_parser, demo_tunnel

STX, ETX = b"\x02", b"\x03"
FA_UNKNOWN = "sFA 1"  # [U] SOPAS error numbering not verified


@dataclass
class ClvSimConfig(SimConfig):
    """How the simulated reader formats its output (mirror of ``SickClvConfig``)."""

    separator: str = ";"
    header_fields: tuple[str, ...] = ()
    noread: str = "NoRead"
    heartbeat: str = "HB"
    max_codes: int = 2


class ClvSim(TunnelSim):
    """A SICK CLV/Lector writing result telegrams and answering CoLa A gate commands."""

    EXTRA_FAULTS = ("double_stx",)

    def __init__(self, port: SimPort, cfg: ClvSimConfig, truth_file: Path | None = None) -> None:
        super().__init__(port, cfg, truth_file)
        self.clv = cfg
        self._rx = b""
        self.gate_open = False

    def telegram(self, codes: Sequence[str], gate: int | None = None) -> bytes:
        """``STX [gate;][count;]code;... ETX`` with this reader's output format."""
        c = self.clv
        noread = list(codes) == [c.noread]
        head = {"gate": f"{gate or 0:06d}", "count": str(0 if noread else len(codes))}
        fields = [head[f] for f in c.header_fields] + list(codes)
        return STX + c.separator.join(fields).encode() + ETX

    def result(self, n: int) -> tuple[bytes, Truth]:
        """Gate ``n``: its codes (or NoRead) and what the host must publish."""
        gate = n if "gate" in self.clv.header_fields else None
        values: tuple[str | None, ...]
        reasons: tuple[str, ...] = ()
        if self.roll("noread"):
            codes, values = [self.clv.noread], (None,)
        else:
            k = self.rng.choice([1, 1, 1, 2, 2, 3][: 2 * self.clv.max_codes])
            codes = [waybill(self.cfg.scanner_no, n, i) for i in range(min(k, self.clv.max_codes))]
            values = tuple(codes)
        data = self.telegram(codes, gate)
        if self.roll("double_stx"):
            data, reasons = STX + data, ("partial",)
        return data, Truth(n, "result", values, gate, reasons, t=time.time())

    def garble(self, data: bytes) -> tuple[bytes, str]:
        """A wrong code count (with a count field) or a control byte inside the telegram."""
        c = self.clv
        if "count" in c.header_fields and self.rng.random() < 0.5:
            start = data.rindex(STX) + 1
            fields = data[start:-1].decode().split(c.separator)
            i = c.header_fields.index("count")
            fields[i] = str(int(fields[i]) + 2)  # +2: a no-read may say 0 or 1
            return data[:start] + c.separator.join(fields).encode() + ETX, "count_mismatch"
        cut = self.rng.randrange(data.rindex(STX) + 1, len(data) - 1)
        return data[:cut] + b"\x07" + data[cut:], "garbled"

    def heartbeat_frame(self) -> bytes | None:
        """``STX HB ETX`` (the configured payload)."""
        return STX + self.clv.heartbeat.encode() + ETX

    def on_input(self, data: bytes) -> None:
        """Answer CoLa A commands; closing a software gate sends that gate's result."""
        self._rx += data
        while ETX in self._rx:
            frame, _, self._rx = self._rx.partition(ETX)
            self._command(frame[frame.rfind(STX) + 1 :].decode("ascii", "replace"))
        self._rx = self._rx[-1024:]

    def _command(self, text: str) -> None:
        if text in ("sMN mTCgateon", "sMN mTCgateoff"):
            self.reply(f"sAN {text[4:]} 1")
            was_open, self.gate_open = self.gate_open, text.endswith("on")
            if was_open and not self.gate_open:
                self.emit()
        else:
            self.reply(FA_UNKNOWN)

    def reply(self, text: str) -> None:
        """Send a CoLa A answer telegram."""
        self.flush()
        self.record(Truth(0, "answer", delivered=self.send(STX + text.encode() + ETX)))


def sim_config(
    cfg: SickClvConfig, rate: float, seed: int, faults: dict[str, float] | None = None
) -> ClvSimConfig:
    """A simulator config that matches a driver config (heartbeat at a third of its timeout)."""
    return ClvSimConfig(
        rate=rate, seed=seed, scanner_no=seed, separator=cfg.separator,
        header_fields=tuple(cfg.header_fields), noread=cfg.noread, heartbeat=cfg.heartbeat,
        heartbeat_s=cfg.heartbeat_timeout_s / 3, inter_byte_s=cfg.inter_byte_timeout_ms / 1000,
        trigger="command" if cfg.gate_trigger == "software" else "self", faults=faults or {},
    )  # fmt: skip


def for_demo(device_id: str, cfg: SickClvConfig, rate: float, seed: int) -> DemoTunnel:
    """A simulated SICK reader at ``cfg.port`` (``socket://127.0.0.1:N`` or a pty symlink)."""
    del device_id
    return demo_tunnel(
        ClvSim, cfg.port, sim_config(cfg, rate, seed, DEMO_FAULTS), "SICK CLV/Lector"
    )


def main(argv: list[str] | None = None) -> int:
    """Run a simulated SICK reader until interrupted."""
    p = common_parser("python -m simulators.sick_clv", __doc__, default_tcp=2112)
    p.add_argument("--separator", default=";")
    p.add_argument("--header", default="", help="fields before the codes, e.g. gate,count")
    p.add_argument("--noread", default="NoRead")
    p.add_argument("--heartbeat", default="HB", help="heartbeat payload")
    p.add_argument("--heartbeat-s", type=float, default=0.0, help="heartbeat interval (0: off)")
    p.add_argument("--max-codes", type=int, default=2, help="labels per parcel, 1..3")
    a = p.parse_args(argv)
    return cli_main(
        ClvSim, ClvSimConfig, a, separator=a.separator,
        header_fields=tuple(filter(None, a.header.split(","))), noread=a.noread,
        heartbeat=a.heartbeat, heartbeat_s=a.heartbeat_s, max_codes=a.max_codes,
    )  # fmt: skip
