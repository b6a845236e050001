"""Simulator of a weight indicator in Toledo continuous-output mode, on a real pty (§3.2).

Streams the frames ``drivers/toledo_continuous.py`` reads, at ``rate`` Hz (5-20 Hz typical [U])::

    STX SWA SWB SWC W(6) [T(6)] CR [CHK]      e.g. 02 2D 30 20 "001234" "000000" 0D 2A

with 7E1 parity (bit 7 set for even parity, as an 8N1 port sees a 7E1 line), motion (SWB bit 3)
until the weight model settles, over capacity (bit 2, ``999999``), negative (bit 1), units
(SWB bit 4 kg / SWC bit 0 g) and the decimal position in SWA. Accepts ``Z``, ``T``, ``C`` (zero,
tare, clear) CR LF, as some indicators do [S: KERN FTC, IND445]. Faults: the shared ones (see
``simulators/_scale_model.py``; ``garble`` breaks the checksum) and ``powerup``: after a replug,
``powerup_frames`` frames carry SWB bit 6 (power-up, not zeroed). Run by hand::

    python -m simulators.toledo_continuous --link /tmp/indicator-1 --rate 10 --faults noise=0.05
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from drivers.toledo_continuous import ToledoContinuousConfig, checksum
from simulators._scale_model import FAULTS, DemoScale, Sample, ScaleSim, ScaleSimConfig, cli_parser
from simulators.pty_port import PtyPort

STX, CR = b"\x02", b"\r"
#: Division step -> SWA bits 3-4 (x1 = 01, x2 = 10, x5 = 11).
INCREMENT = {1: 0b01, 2: 0b10, 5: 0b11}


@dataclass
class ToledoSimConfig(ScaleSimConfig):
    """Frame variant and parity of the simulated indicator."""

    checksum: bool = True
    tare_field: bool = True
    parity: bool = True
    powerup_frames: int = 20


def even_parity(data: bytes) -> bytes:
    """Set bit 7 so each byte has an even number of ones (7E1)."""
    return bytes(b | (bin(b).count("1") % 2) << 7 for b in data)


class ToledoSim(ScaleSim):
    """An indicator streaming continuous-output frames."""

    FAULTS = (*FAULTS, "powerup")
    CONFIG = ToledoSimConfig
    cfg: ToledoSimConfig

    def __init__(self, port: PtyPort, cfg: ToledoSimConfig, truth_file: Path | None = None) -> None:
        super().__init__(port, cfg, truth_file)
        self.streaming = True
        self._powerup = 0

    def frame(self, s: Sample) -> bytes:
        """The 7-bit frame for ``s`` (no parity), checksum included if configured."""
        d, over = self.cfg.display, s.over or abs(s.counts) > 999_999
        swa = 0x20 | INCREMENT[d.step] << 3 | (d.decimals + 2)
        swb = 0x20 | s.net | (s.counts < 0) << 1 | over << 2 | (not s.stable) << 3
        swb |= (d.unit in ("kg", "g")) << 4 | (self._powerup > 0) << 6
        weight = b"999999" if over else b"%06d" % abs(s.counts)
        tare = b"%06d" % min(self.model.tare_counts, 999_999) if self.cfg.tare_field else b""
        body = STX + bytes([swa, swb, 0x20 | (d.unit == "g")]) + weight + tare + CR
        return body + bytes([checksum(body)]) if self.cfg.checksum else body

    def encode(self, s: Sample) -> tuple[bytes, str]:
        """``s`` as a frame with parity; its kind is what the driver will make of it."""
        data = self.frame(s)
        kind = "over_capacity" if data[2] & 0x04 else "weight" if s.stable else "motion"
        if self._powerup > 0:
            self._powerup -= 1
            kind = "over_capacity" if kind == "over_capacity" else "not_zeroed"
        return (even_parity(data) if self.cfg.parity else data), kind

    def garble(self, frame: bytes) -> tuple[bytes, str]:
        """Flip one of bits 0-6 in the payload: the checksum no longer matches."""
        while True:
            i, bit = self.rng.randrange(1, 10), 1 << self.rng.randrange(7)
            if (frame[i] ^ bit) & 0x7F != 0x02:  # an STX would cut the frame (partial)
                kind = "checksum" if self.cfg.checksum else "malformed"
                return frame[:i] + bytes([frame[i] ^ bit]) + frame[i + 1 :], kind

    def on_command(self, cmd: bytes, now: float) -> None:
        """``Z`` zero, ``T`` tare, ``C`` clear tare (no reply; the stream shows the effect)."""
        text = cmd.strip()
        if text == b"Z":
            self.model.zero()
        elif text == b"T":
            self.model.tare()
        elif text == b"C":
            self.model.clear_tare()

    def on_replug(self) -> None:
        """Power cycle: streaming resumes, maybe with the power-up flag for a while."""
        if self._hit("powerup"):
            self._powerup = self.cfg.powerup_frames


def for_demo(device_id: str, cfg: ToledoContinuousConfig, rate: float, seed: int) -> DemoScale:
    """A simulated indicator streaming behind ``cfg.port`` (a symlink path) at 5-20 Hz."""
    return ToledoSim.demo(
        f"Toledo indicator {device_id}", cfg.port, cfg.max_capacity_g,
        max(5.0, min(rate * 2, 20.0)), seed, {"partial": 0.01}, checksum=cfg.checksum,
        tare_field=cfg.tare_field,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Run a simulated Toledo continuous-output indicator on a new pty until interrupted."""
    p = cli_parser("toledo_continuous", __doc__)
    p.add_argument("--no-checksum", action="store_true", help="17-byte frames")
    p.add_argument("--short", action="store_true", help="no tare field (Cardinal variant)")
    p.add_argument("--no-parity", action="store_true", help="8N1 bytes, bit 7 clear")
    args = p.parse_args(argv)
    return ToledoSim.run_cli(args, checksum=not args.no_checksum, tare_field=not args.short,
                             parity=not args.no_parity)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
