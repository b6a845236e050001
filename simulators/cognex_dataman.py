"""Simulator of a Cognex DataMan fixed reader: result lines and DMCC over TCP or a pty.

It speaks the bytes :mod:`drivers.cognex_dataman` reads (docs/protocols.md §1.2)::

    [17,]SF1000000000004 CR LF                 result (silent mode; optional trigger index)
    NoRead CR LF | CR LF | nothing             no-read: noread_mode = text | empty | none
    ||1:0[1]SF1000000000004<X> CR LF           extended mode (DMCC-RESPONSE 1), with checksum
    host ||>TRIGGER ON CR LF                   -> a result (extended: also ||[0])
    host ||1:5>TRIGGER ON<X> CR LF             -> the checksum is checked; bad -> ||1:5[103]<X>
    host ||>GET x / ||>SET x y                 -> ||[0] (extended mode only; silent: no reply)

``<X>`` is the XOR byte over the line (``checksum_span = line``) or the payload [U]. In extended
mode with ``base64``, read strings are base64 [U, DM100/200 firmware 3.5]. ``garble`` flips a
bit of the code when the line has a checksum (the host rejects it as ``checksum``) and inserts a
control byte otherwise (``garbled``). A cut-off line is ended by silence, as on the real link.

Run by hand (prints the URL it serves; the DataMan default TCP port is 23)::

    python -m simulators.cognex_dataman --tcp 2323 --trigger command --extended --checksum
"""

from __future__ import annotations

import base64
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from drivers.cognex_dataman import TERMINATORS, CognexDatamanConfig, xor
from simulators.tunnel.engine import TunnelSim
from simulators.tunnel.model import SimConfig, SimPort, Truth, waybill
from simulators.tunnel.runner import DEMO_FAULTS, DemoTunnel, cli_main, common_parser, demo_tunnel

COMMAND = re.compile(rb"\|\|(?:(?P<ck>[01])(?::(?P<id>\d*))?)?>")


@dataclass
class DataManSimConfig(SimConfig):
    """How the simulated reader formats results (mirror of ``CognexDatamanConfig``)."""

    terminator: str = "CRLF"
    noread_mode: str = "text"
    noread_text: str = "NoRead"
    index_field: bool = False
    index_separator: str = ","
    extended: bool = False
    checksum: bool = False
    checksum_span: str = "line"
    base64: bool = False


class DataManSim(TunnelSim):
    """A DataMan sending one line per trigger and answering DMCC commands."""

    def __init__(
        self, port: SimPort, cfg: DataManSimConfig, truth_file: Path | None = None
    ) -> None:
        super().__init__(port, cfg, truth_file)
        self.dm = cfg
        self.noise = b"\x00\xff"  # bytes a line framer skips between lines
        self.partial_gap = True
        self._rx = b""
        self._cid = ""

    def line(self, text: str, index: int | None = None, status: int = 1) -> bytes:
        """One output line: ``[index SEP] text`` in silent or extended (DMCC) form."""
        c = self.dm
        payload = (f"{index}{c.index_separator}" if index is not None else "") + text
        body = payload.encode()
        if not c.extended:
            return body + TERMINATORS[c.terminator]
        if c.base64 and status == 1:
            body = base64.b64encode(body)
        return self._response(status, body, checksum=c.checksum)

    def _response(self, status: int, body: bytes, *, checksum: bool) -> bytes:
        head = (f"||1:{self._cid or 0}" if checksum else "||") + f"[{status}]"
        line = head.encode() + body
        if checksum:
            line += bytes([xor(line if self.dm.checksum_span == "line" else body)])
        return line + b"\r\n"

    def result(self, n: int) -> tuple[bytes, Truth]:
        """Trigger ``n``: the code, or the configured no-read (nothing at all for ``none``)."""
        c = self.dm
        index = n if c.index_field else None
        if self.roll("noread"):
            if c.noread_mode == "none":
                return b"", Truth(n, "result", (), index, t=time.time())
            text = c.noread_text if c.noread_mode == "text" else ""
            return self.line(text, index), Truth(n, "result", (None,), index, t=time.time())
        code = waybill(self.cfg.scanner_no, n)
        return self.line(code, index), Truth(n, "result", (code,), index, t=time.time())

    def garble(self, data: bytes) -> tuple[bytes, str]:
        """Flip a bit of a code character (checksum lines) or insert a control byte."""
        checked = self._checked()
        end = len(data) - len(TERMINATORS[self.dm.terminator]) - (1 if checked else 0)
        start = data.index(b"]") + 1 if data.startswith(b"||") else 0
        spots = [i for i in range(start, end) if chr(data[i]).isalnum()]
        if checked and spots:
            i = self.rng.choice(spots)
            return data[:i] + bytes([data[i] ^ 1]) + data[i + 1 :], "checksum"
        cut = self.rng.randrange(start, end + 1)
        # a checked line fails its checksum before anything else is looked at
        return data[:cut] + b"\x07" + data[cut:], "checksum" if checked else "garbled"

    def _checked(self) -> bool:
        return self.dm.extended and self.dm.checksum

    def on_input(self, data: bytes) -> None:
        """Handle DMCC command lines (footer CR LF)."""
        self._rx += data
        while b"\r\n" in self._rx:
            line, _, self._rx = self._rx.partition(b"\r\n")
            self._command(line)
        self._rx = self._rx[-4096:]

    def _command(self, line: bytes) -> None:
        m = COMMAND.match(line)
        if m is None:
            return  # not DMCC: a real reader ignores it too
        self._cid = (m["id"] or b"").decode()
        checksum = m["ck"] == b"1"
        text = line[m.end() :]
        if checksum:
            if not text or xor(line[:-1]) != line[-1]:
                self._answer(103, checksum=True)
                return
            text = text[:-1]
        verb = text.decode("ascii", "replace").strip().upper()
        if verb == "TRIGGER ON":
            self._answer(0, checksum=checksum)
            self.emit()
        elif verb.startswith(("GET ", "SET ")):
            self._answer(0, checksum=checksum)
        else:
            self._answer(101, checksum=checksum)

    def _answer(self, status: int, *, checksum: bool) -> None:
        if self.dm.extended:
            self.flush()
            data = self._response(status, b"", checksum=checksum)
            self.record(Truth(0, "answer", delivered=self.send(data)))


def sim_config(
    cfg: CognexDatamanConfig, rate: float, seed: int, faults: dict[str, float] | None = None
) -> DataManSimConfig:
    """A simulator config matching a driver config (silent mode, no checksum)."""
    return DataManSimConfig(
        rate=rate, seed=seed, scanner_no=seed, terminator=cfg.terminator,
        noread_mode=cfg.noread_mode, noread_text=cfg.noread_text, index_field=cfg.index_field,
        index_separator=cfg.index_separator, base64=cfg.extended_base64,
        checksum_span=cfg.checksum_span, inter_byte_s=cfg.inter_byte_timeout_ms / 1000,
        trigger="command" if cfg.trigger_period_ms else "self", faults=faults or {},
    )  # fmt: skip


def for_demo(device_id: str, cfg: CognexDatamanConfig, rate: float, seed: int) -> DemoTunnel:
    """A simulated DataMan at ``cfg.port`` (``socket://127.0.0.1:N`` or a pty symlink)."""
    del device_id
    faults = {k: v for k, v in DEMO_FAULTS.items() if k != "duplicate" or cfg.index_field}
    return demo_tunnel(DataManSim, cfg.port, sim_config(cfg, rate, seed, faults), "Cognex DataMan")


def main(argv: list[str] | None = None) -> int:
    """Run a simulated DataMan until interrupted."""
    p = common_parser("python -m simulators.cognex_dataman", __doc__, default_tcp=2323)
    p.add_argument("--terminator", choices=sorted(TERMINATORS), default="CRLF")
    p.add_argument("--noread-mode", choices=["none", "empty", "text"], default="text")
    p.add_argument("--noread-text", default="NoRead")
    p.add_argument("--index", action="store_true", help="send the trigger index before the code")
    p.add_argument("--extended", action="store_true", help="DMCC-RESPONSE 1 (||[status] lines)")
    p.add_argument("--checksum", action="store_true", help="XOR checksum on extended lines")
    p.add_argument("--base64", action="store_true", help="base64 read strings (extended)")
    a = p.parse_args(argv)
    return cli_main(
        DataManSim, DataManSimConfig, a, terminator=a.terminator, noread_mode=a.noread_mode,
        noread_text=a.noread_text, index_field=a.index, extended=a.extended,
        checksum=a.checksum, base64=a.base64,
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
