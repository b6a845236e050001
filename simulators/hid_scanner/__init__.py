"""Simulated USB HID handheld scanners behind a pyusb backend (mirrors ``drivers/hid_scanner``).

Parts (docs/protocols.md §2.1-2.3, §6 "Handheld HID-KBD / HID-POS"):

* :mod:`.reports`: the exact reports a scanner sends for a code (keyboard wedge or HID POS);
* :mod:`.device`: ``SimDevice``, one scanner: state, real descriptors, libusb's errors;
* :mod:`.backend`: ``SimBackend``, a ``usb.backend.IBackend`` whose devices enumerate, start
  bound to usbhid, and raise errno 16/19/110 the way pyusb's libusb1 backend does;
* :mod:`.scanner`: ``HidScannerSim``, codes -> reports with seedable faults and a truth log;
* :mod:`.spool`: the cross-process hook. The daemon runs as its own process in the end-to-end
  tests and the demo, so it cannot be handed a backend object. Started with
  ``EDGE_AGENT_USB_BACKEND=sim:<dir>``, its HID driver calls :func:`spool_backend` and gets a
  ``SimBackend`` (one per process) that mirrors ``<dir>``; the test or demo process plugs, feeds,
  unplugs and replugs devices there with ``SpoolDevice``. Unset, the driver uses libusb as in
  production; the value is a closed vocabulary (no module path is imported from it) and the
  daemon logs ``usb_backend_override`` when it is set.

In-process tests skip the spool: ``HidScannerDriver(id, cfg, backend=SimBackend([dev]))``.

By hand::

    python -m simulators.hid_scanner dump --mode keyboard SF1            # reports as hex
    python -m simulators.hid_scanner run --spool /tmp/hid --vid 0x0c2e --pid 0x0b8f --rate 2
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from simulators.hid_scanner.backend import SimBackend
from simulators.hid_scanner.device import SimDevice
from simulators.hid_scanner.scanner import HidScannerSim, HidSimConfig, Truth
from simulators.hid_scanner.spool import SpoolDevice, spool_backend

if TYPE_CHECKING:
    from drivers.hid_scanner.config import HidScannerConfig

__all__ = [
    "DemoHidScanner",
    "HidScannerSim",
    "HidSimConfig",
    "SimBackend",
    "SimDevice",
    "SpoolDevice",
    "Truth",
    "for_demo",
    "spool_backend",
]

ENV_BACKEND = "EDGE_AGENT_USB_BACKEND"
#: Faults the demo injects, so its output shows rejects being counted.
DEMO_FAULTS = {
    "keyboard": {"drop_release": 0.05, "unknown_key": 0.02, "rollover": 0.01},
    "pos": {"bad_length": 0.02, "missing_packet": 0.02},
}


class DemoHidScanner:
    """A :class:`HidScannerSim` feeding a :class:`SpoolDevice` (``for_demo``)."""

    def __init__(self, device_id: str, sim: HidScannerSim, device: SpoolDevice) -> None:
        self.device_id = device_id
        self.sim = sim
        self.device = device

    def start(self) -> None:
        """Scan until stopped."""
        self.sim.start()

    def stop(self) -> None:
        """Stop scanning; wait (up to 3 s) until the daemon has taken every report sent.

        The device stays plugged: unplugging now would make the daemon log a reconnect while
        the demo is still counting what arrived.
        """
        self.sim.stop()
        reports = self.device.dir / "reports"
        deadline = time.monotonic() + 3
        while any(p.suffix == ".bin" for p in reports.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.05)

    def expected(self) -> int:
        """Codes delivered that the agent must publish (rejects are not readings)."""
        return sum(t.kind == "barcode" and t.delivered for t in self.sim.truth)

    def describe(self) -> str:
        """What is simulated and where."""
        return f"HID {self.sim.cfg.mode} scanner on the simulated USB bus in {self.device.dir}"


def spool_root() -> Path:
    """The spool directory of ``EDGE_AGENT_USB_BACKEND=sim:<dir>``, set here if not yet set.

    The demo starts the daemon after asking every simulator for itself, and the daemon inherits
    this process's environment: that is how it learns to use the simulated bus.
    """
    value = os.environ.get(ENV_BACKEND, "")
    if not value.startswith("sim:"):
        value = f"sim:{tempfile.mkdtemp(prefix='edge-agent-usb-sim-')}"
        os.environ[ENV_BACKEND] = value
    return Path(value[4:])


def for_demo(device_id: str, cfg: HidScannerConfig, rate: float, seed: int) -> DemoHidScanner:
    """A simulated scanner enumerating as ``cfg`` describes (VID:PID, serial, mode)."""
    device = SpoolDevice(spool_root(), device_id, vid=cfg.vid, pid=cfg.pid, serial=cfg.serial,
                         mode=cfg.mode)  # fmt: skip
    sim_cfg = HidSimConfig(
        mode=cfg.mode, aim=cfg.aim_ids, terminator=cfg.terminator, rate=rate, seed=seed,
        scanner_no=seed, faults=DEMO_FAULTS[cfg.mode],
    )  # fmt: skip
    return DemoHidScanner(device_id, HidScannerSim(device, sim_cfg), device)
