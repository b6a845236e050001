"""Simulator of a Datalogic fixed scanner (DS8110, DX8210, Matrix) over TCP or a pty.

It speaks the bytes :mod:`drivers.datalogic` reads (docs/protocols.md §1.3)::

    STX SF1000000000004,YT1000000000005 CR LF      one message per parcel, slots split by ","
    STX ??????? CR LF                               global no-read (fault ``noread``)
    STX SF1000000000004,? CR LF                     local no-read in a slot (``local_noread``)
    STX MULTI CR LF                                 Multiple Read Message (``multiread``), or with
                                                    multiread_separator, every label sent

Code Combination ``mode``:

* ``single``: one label.
* ``standard``: ``slots`` labels in fixed order, each one possibly a local no-read. If every
  slot misses, the global no-read is sent instead.
* ``logical``: a rule such as ``1&1^2`` decides on the reader which labels are required. On the
  wire it looks like ``standard``.
* ``collection``: 1 to ``slots`` labels, with no placeholders.

PackTrack: ``tx_delay_s`` (TX-line distance / belt speed) is the delay from trigger to
transmission. The byte stream is the same; the truth records the trigger time, ``tx_delay_s``
before the message is sent.

Run by hand (prints the URL it serves)::

    python -m simulators.datalogic --tcp 51236 --mode standard --slots 2 \\
        --faults local_noread=0.1,noread=0.05,multiread=0.02
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from drivers.datalogic import TERMINATORS, DatalogicConfig
from simulators.tunnel.engine import TunnelSim
from simulators.tunnel.model import SimConfig, SimPort, Truth, waybill
from simulators.tunnel.runner import DEMO_FAULTS, DemoTunnel, cli_main, common_parser, demo_tunnel

MODES = ("single", "standard", "logical", "collection")


@dataclass
class DatalogicSimConfig(SimConfig):
    """How the simulated scanner formats messages (mirror of ``DatalogicConfig``)."""

    header: str = "STX"
    terminator: str = "CRLF"
    separator: str = ","
    mode: str = "standard"
    slots: int = 2
    global_noread: str = "???????"
    local_noread: str = "?"
    multiread_text: str = ""
    multiread_separator: str = ""
    tx_delay_s: float = 0.0


class DatalogicSim(TunnelSim):
    """A Datalogic scanner sending one message per parcel."""

    EXTRA_FAULTS = ("local_noread", "multiread")

    def __init__(
        self, port: SimPort, cfg: DatalogicSimConfig, truth_file: Path | None = None
    ) -> None:
        if cfg.mode not in MODES:
            msg = f"mode {cfg.mode!r}: expected one of {', '.join(MODES)}"
            raise ValueError(msg)
        super().__init__(port, cfg, truth_file)
        self.dl = cfg
        if cfg.header == "none":  # a line framer: only 0x00/0xFF between lines, cut by silence
            self.noise, self.partial_gap = b"\x00\xff", True

    def message(self, text: str) -> bytes:
        """``text`` wrapped in the configured header and terminator."""
        head = b"\x02" if self.dl.header == "STX" else b""
        return head + text.encode() + TERMINATORS[self.dl.terminator]

    def result(self, n: int) -> tuple[bytes, Truth]:
        """The message for parcel ``n`` and the readings it must give."""
        c = self.dl
        t = time.time() - c.tx_delay_s
        if self.roll("noread"):
            return self.message(c.global_noread), Truth(n, "result", (None,), t=t)
        if self.roll("multiread") and (c.multiread_text or c.multiread_separator):
            if c.multiread_text:
                return self.message(c.multiread_text), Truth(n, "result", (None,), t=t)
            codes = [waybill(c.scanner_no, n, i) for i in range(2)]
            text = c.multiread_separator.join(codes)
            return self.message(text), Truth(n, "result", tuple(codes), t=t)
        values = self._slots(n)
        if all(v is None for v in values):
            return self.message(c.global_noread), Truth(n, "result", (None,), t=t)
        text = c.separator.join(c.local_noread if v is None else v for v in values)
        return self.message(text), Truth(n, "result", values, t=t)

    def _slots(self, n: int) -> tuple[str | None, ...]:
        c = self.dl
        if c.mode == "collection":
            k = self.rng.randint(1, max(1, c.slots))
            return tuple(waybill(c.scanner_no, n, i) for i in range(k))
        k = 1 if c.mode == "single" else c.slots
        return tuple(
            None if self.roll("local_noread") else waybill(c.scanner_no, n, i) for i in range(k)
        )

    def garble(self, data: bytes) -> tuple[bytes, str]:
        """A control byte inside the message."""
        start = 1 if self.dl.header == "STX" else 0
        end = len(data) - len(TERMINATORS[self.dl.terminator])
        cut = self.rng.randrange(start, end + 1)
        return data[:cut] + b"\x07" + data[cut:], "garbled"


def sim_config(
    cfg: DatalogicConfig, rate: float, seed: int, faults: dict[str, float] | None = None
) -> DatalogicSimConfig:
    """A simulator config matching a driver config."""
    return DatalogicSimConfig(
        rate=rate, seed=seed, scanner_no=seed, header=cfg.header, terminator=cfg.terminator,
        separator=cfg.separator, global_noread=cfg.global_noread, local_noread=cfg.local_noread,
        multiread_text=cfg.multiread_text, multiread_separator=cfg.multiread_separator,
        inter_byte_s=cfg.inter_byte_timeout_ms / 1000, faults=faults or {},
    )  # fmt: skip


def for_demo(device_id: str, cfg: DatalogicConfig, rate: float, seed: int) -> DemoTunnel:
    """A simulated Datalogic scanner at ``cfg.port`` (TCP on loopback or a pty symlink)."""
    del device_id
    faults = {**DEMO_FAULTS, "local_noread": 0.05, "multiread": 0.02}
    faults.pop("duplicate")  # no gate counter: a repeat would be published as a second parcel
    return demo_tunnel(
        DatalogicSim, cfg.port, sim_config(cfg, rate, seed, faults), "Datalogic DS/DX"
    )


def main(argv: list[str] | None = None) -> int:
    """Run a simulated Datalogic scanner until interrupted."""
    p = common_parser("python -m simulators.datalogic", __doc__, default_tcp=51236)
    p.add_argument("--header", choices=["STX", "none"], default="STX")
    p.add_argument("--terminator", choices=sorted(TERMINATORS), default="CRLF")
    p.add_argument("--separator", default=",")
    p.add_argument("--mode", choices=MODES, default="standard")
    p.add_argument("--slots", type=int, default=2, help="labels per parcel")
    p.add_argument("--multiread-text", default="", help="Multiple Read Message (e.g. MULTI)")
    p.add_argument("--multiread-separator", default="", help="send all labels, split by this")
    p.add_argument("--tx-delay", type=float, default=0.0, help="PackTrack delay, seconds")
    a = p.parse_args(argv)
    return cli_main(
        DatalogicSim, DatalogicSimConfig, a, header=a.header, terminator=a.terminator,
        separator=a.separator, mode=a.mode, slots=a.slots, multiread_text=a.multiread_text,
        multiread_separator=a.multiread_separator, tx_delay_s=a.tx_delay,
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
