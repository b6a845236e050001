"""Simulator of a Mettler Toledo MT-SICS balance/terminal on a real pty (docs/protocols.md §3.1).

Answers the commands ``drivers/mtsics_scale.py`` sends, from the shared weight model::

    SI    -> S S <w> <u> (stable) | S D <w> <u> (moving) | S + | S -
    S     -> S S <w> <u> once stable; S I after ``s_timeout_s`` of motion
    SIR   -> S S/S D lines at ``rate`` until another command or @
    Z     -> Z A | Z I | Z + | Z -        T -> T S <tare> <u> | T I      TA, TAC, @, I4
    other -> ES

The weight field is right-aligned, 10 characters [U]. Faults (``--faults name=p,...``): the
shared ones (see ``simulators/_scale_model.py``) plus ``busy`` (``S I`` to a poll) and
``error`` (``ET`` to a poll). Run by hand::

    python -m simulators.mtsics_scale --link /tmp/scale-1 --faults noise=0.05,garble=0.02
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from drivers.mtsics_scale import MtSicsScaleConfig
from simulators._scale_model import FAULTS, DemoScale, Sample, ScaleSim, ScaleSimConfig, cli_parser


@dataclass
class MtSicsSimConfig(ScaleSimConfig):
    """MT-SICS specifics: how long ``S`` waits for stability before ``S I``."""

    s_timeout_s: float = 3.0


class MtSicsSim(ScaleSim):
    """An MT-SICS device: a reply per command line, or a stream after ``SIR``."""

    FAULTS = (*FAULTS, "busy", "error")
    CONFIG = MtSicsSimConfig
    PARTIAL_GAP_S = 0.3  # a line has no start byte: only silence ends a cut-off one
    cfg: MtSicsSimConfig

    def line(self, text: str) -> bytes:
        """One reply line."""
        return text.encode("ascii") + b"\r\n"

    def weight(self, head: str, counts: int) -> str:
        """``S S      1.234 kg``-style text: 10-character value field, unit."""
        return f"{head} {self.cfg.display.text(counts):>10} {self.cfg.display.unit}"

    def encode(self, s: Sample) -> tuple[bytes, str]:
        """A sample as an ``SI`` reply."""
        if s.over:
            return self.line("S +"), "over_capacity"
        if s.under:
            return self.line("S -"), "under_range"
        kind = "weight" if s.stable else "motion"
        return self.line(self.weight("S S" if s.stable else "S D", s.counts)), kind

    def _poll_reply(self, now: float) -> None:
        if self._hit("busy"):
            self.emit(self.line("S I"), "not_executable", None)
        elif self._hit("error"):
            self.emit(self.line("ET"), "transmission_error", None)
        else:
            self.send_sample(now)

    def on_command(self, cmd: bytes, now: float) -> None:
        """Answer one command line."""
        text = cmd.decode("ascii", "replace").strip()
        self.streaming, self._wait_stable = text == "SIR", None
        self._next_frame = now + 1 / self.cfg.rate
        if text in ("SI", "SIR"):
            self._poll_reply(now)
        elif text == "S":
            self._wait_stable = now + self.cfg.s_timeout_s
            self.tick(now)
        elif text in ("Z", "ZI"):
            self.emit(self.line(f"Z {self.model.zero()}"), "command", None)
        elif text in ("T", "TI"):
            status, tare = self.model.tare()
            reply = self.weight("T S", tare) if status == "S" else "T I"
            self.emit(self.line(reply), "command", None)
        else:
            self.emit(self.line(self._other(text)), "command", None)

    def _other(self, text: str) -> str:
        if text == "TAC":
            self.model.clear_tare()
            return "TAC A"
        if text == "TA":
            return self.weight("TA A", self.model.tare_counts)
        if text in ("@", "I4"):
            return 'I4 A "0123456789"'
        return "ES"

    def unstable_reply(self) -> tuple[bytes, str]:
        """A pending ``S`` that timed out in motion: ``S I``."""
        return self.line("S I"), "not_executable"


def for_demo(device_id: str, cfg: MtSicsScaleConfig, rate: float, seed: int) -> DemoScale:
    """A simulated MT-SICS scale behind ``cfg.port`` (a symlink path), polled by the agent."""
    return MtSicsSim.demo(f"MT-SICS scale {device_id}", cfg.port, cfg.max_capacity_g,
                          max(5.0, min(rate, 20.0)), seed, {})  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Run a simulated MT-SICS scale on a new pty until interrupted."""
    p = cli_parser("mtsics_scale", __doc__)
    p.add_argument("--s-timeout", type=float, default=3.0, help="S waits this long for stable")
    args = p.parse_args(argv)
    return MtSicsSim.run_cli(args, s_timeout_s=args.s_timeout)


if __name__ == "__main__":
    sys.exit(main())
