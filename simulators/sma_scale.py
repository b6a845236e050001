"""Simulator of a scale speaking the SMA protocol (SCP-0499 levels 1-2), on a real pty (§3.3).

Answers the commands ``drivers/sma_scale.py`` sends, from the shared weight model::

    LF W CR | LF H CR   -> LF s r n m f w(10) u(3) CR      e.g. "\\n 1G       1.234kg \\r"
    LF Q CR             -> the same once stable; dashes after ``q_timeout_s``
    LF R CR | LF S CR   -> the same, streamed at ``rate`` Hz until ESC or another command
    LF Z CR / T / C     -> zero / tare / clear tare, then a weight reply
    anything else       -> LF ? CR

Status ``O`` over capacity, ``U`` under zero, ``M`` motion. Faults: the shared ones (see
``simulators/_scale_model.py``) plus ``unknown`` (``?`` to a poll) and ``zero_error`` (status
``E`` with dashes). ``--stream`` streams from power-up without a command [U]. Run by hand::

    python -m simulators.sma_scale --link /tmp/sma-1 --faults noise=0.05,unknown=0.02
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from drivers.sma_scale import SmaScaleConfig
from simulators._scale_model import FAULTS, DemoScale, Sample, ScaleSim, ScaleSimConfig, cli_parser
from simulators.pty_port import PtyPort

DASHES = "-" * 10


@dataclass
class SmaSimConfig(ScaleSimConfig):
    """SMA specifics: stream from power-up, how long ``Q`` waits for stability."""

    stream_on_start: bool = False
    q_timeout_s: float = 3.0


class SmaSim(ScaleSim):
    """An SMA scale: a reply per ``LF cmd CR``, or a stream after ``R``/``S``."""

    FAULTS = (*FAULTS, "unknown", "zero_error")
    CONFIG = SmaSimConfig
    cfg: SmaSimConfig

    def __init__(self, port: PtyPort, cfg: SmaSimConfig, truth_file: Path | None = None) -> None:
        super().__init__(port, cfg, truth_file)
        self.streaming = cfg.stream_on_start
        self._high = False

    def split(self, buf: bytes) -> tuple[list[bytes], bytes]:
        """``LF cmd CR`` commands (and a bare ESC) in ``buf``; the rest."""
        cmds = []
        while b"\x1b" in buf or b"\r" in buf:
            if b"\x1b" in buf and (b"\r" not in buf or buf.index(b"\x1b") < buf.index(b"\r")):
                cmds.append(b"\x1b")
                buf = buf[buf.index(b"\x1b") + 1 :]
                continue
            cmd, _, buf = buf.partition(b"\r")
            cmds.append(cmd.rpartition(b"\n")[2])
        return cmds, buf

    def reply(self, s: str, n: str, m: str, weight: str) -> bytes:
        """``LF s r n m f weight(10) unit(3) CR``."""
        unit = self.cfg.display.unit
        return f"\n{s}1{n}{m} {weight:>10}{unit:<3}\r".encode("ascii")

    def encode(self, s: Sample) -> tuple[bytes, str]:
        """A sample as a weight reply (status, motion and over/under flags)."""
        n = ("n" if s.net else "g") if self._high else ("N" if s.net else "G")
        text = self.cfg.display.text(s.counts)
        if s.over:
            return self.reply("O", n, " ", text), "over_capacity"
        if s.under:
            return self.reply("U", n, " ", text), "under_range"
        status = "Z" if s.counts == 0 and s.stable else " "
        kind = "weight" if s.stable else "motion"
        return self.reply(status, n, " " if s.stable else "M", text), kind

    def _answer(self, now: float) -> None:
        if self._hit("unknown"):
            self.emit(b"\n?\r", "unknown_command", None)
        elif self._hit("zero_error"):
            self.emit(self.reply("E", "G", " ", DASHES), "zero_error", None)
        else:
            self.send_sample(now)

    def on_command(self, cmd: bytes, now: float) -> None:
        """Answer one command."""
        self._wait_stable = None
        self.streaming, self._high = cmd in (b"R", b"S"), cmd in (b"H", b"Q", b"S")
        self._next_frame = now + 1 / self.cfg.rate
        if cmd in (b"W", b"H", b"R", b"S"):
            self._answer(now)
        elif cmd == b"Q":
            self._wait_stable = now + self.cfg.q_timeout_s
            self.tick(now)
        elif cmd in (b"Z", b"T", b"C"):
            {b"Z": self.model.zero, b"T": self.model.tare, b"C": self.model.clear_tare}[cmd]()
            self._answer(now)
        elif cmd != b"\x1b":
            self.emit(b"\n?\r", "unknown_command", None)

    def unstable_reply(self) -> tuple[bytes, str]:
        """A pending ``Q`` that timed out in motion: dashes."""
        return self.reply(" ", "g", "M", DASHES), "no_weight"

    def on_replug(self) -> None:
        """Power cycle: back to the power-up mode."""
        self.streaming = self.cfg.stream_on_start


def for_demo(device_id: str, cfg: SmaScaleConfig, rate: float, seed: int) -> DemoScale:
    """A simulated SMA scale behind ``cfg.port`` (a symlink path), in the configured mode."""
    return SmaSim.demo(
        f"SMA scale {device_id}", cfg.port, cfg.max_capacity_g, max(5.0, min(rate * 2, 20.0)),
        seed, {"unknown": 0.01},
        stream_on_start=cfg.mode == "continuous" and not cfg.continuous_command,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Run a simulated SMA scale on a new pty until interrupted."""
    p = cli_parser("sma_scale", __doc__)
    p.add_argument("--stream", action="store_true", help="stream from power-up (no R needed)")
    p.add_argument("--q-timeout", type=float, default=3.0, help="Q waits this long for stable")
    args = p.parse_args(argv)
    return SmaSim.run_cli(args, stream_on_start=args.stream, q_timeout_s=args.q_timeout)


if __name__ == "__main__":
    sys.exit(main())
