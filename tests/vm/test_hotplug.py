"""Scenario 4: USB serial hotplug under the hardened unit.

* Ten QMP ``device_del`` / ``device_add`` cycles of the emulated FTDI adapter while the
  simulated scanner writes. It pauses from just before the unplug until the agent has the port
  open again: bytes sent into an unplugged adapter go nowhere, and bytes the adapter holds
  before the port is opened are purged by ftdi_sio's reset on open (on a real line too).
  Every reading written while the agent had the port open arrives.
* Boot with no adapter at all (``usbserial``/``ftdi_sio`` not loaded, so the unit's
  ``DeviceAllow=char-ttyUSB`` has to resolve through ``modprobe@usbserial``), plug it in later:
  the udev rule's stable name appears and the running agent reads the scanner through it.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from simulators.mosquitto import Mosquitto
from tests import ledger
from tests.vm import lab
from tests.vm.conftest import PASSWORD, timing
from tests.vm.qemu import Guest

CYCLES = 10

pytestmark = pytest.mark.vm


@pytest.mark.timeout(600)
def test_hotplug_ten_times_while_scanning(guest: Guest, broker: Mosquitto, tmp_path: Path) -> None:
    guest.start()
    assert guest.usb is not None
    devices = {lab.DEVICE: {**lab.SCANNER_CFG, "port": guest.usb.by_id}}
    backend = lab.configure(guest, broker.port, devices, PASSWORD)
    sim = lab.scanner(guest, rate=10.0, seed=4)
    try:
        assert backend.subscribed.wait(10)
        lab.start_service(guest)
        sim.start()
        gone: list[float] = []
        back: list[float] = []
        reopened: list[float] = []
        for _ in range(CYCLES):
            time.sleep(1.0)
            sim.pause()  # between two frames; let the last ones reach the guest
            time.sleep(0.3)
            t0 = time.monotonic()
            guest.unplug_usb_serial()
            guest.wait_until(f"! test -e {guest.usb.by_id}", timeout=15, interval=0.1)
            gone.append(time.monotonic() - t0)
            t1 = time.monotonic()
            guest.plug_usb_serial()
            guest.wait_until(f"test -e {guest.usb.by_id}", timeout=15, interval=0.1)
            back.append(time.monotonic() - t1)
            # the agent reopened the port (its supervisor retries with a backoff)
            guest.wait_until(
                "test $(journalctl -u edge-agent -o cat | grep device_state | grep -c connected)"
                f" -ge {len(back) + 1}",
                timeout=30,
                interval=0.2,
            )
            reopened.append(time.monotonic() - t1)
            sim.resume()
        time.sleep(2.0)
        sim.stop()
        emitted = ledger.scanner_emitted(lab.DEVICE, sim)
        assert backend.wait_for(
            lambda: len({r["value"] for _, r in backend.readings()}) >= len(emitted), timeout=60
        ), f"{len({r['value'] for _, r in backend.readings()})} of {len(emitted)} arrived"
        timing("hotplug: unplugged -> by-id link gone (max)", max(gone))
        timing("hotplug: plugged -> by-id link back (max)", max(back))
        timing("hotplug: plugged -> agent reading again (max)", max(reopened))
        guest.run("systemctl stop edge-agent.service", timeout=60)
        db = lab.fetch_queue(guest, tmp_path / "queue")
        ledger.check(
            "vm_hotplug",
            backend,
            db,
            emitted=emitted,
            devices=[lab.DEVICE],
            cycles=CYCLES,
            gone_s=[round(g, 2) for g in gone],
            back_s=[round(b, 2) for b in back],
            reopened_s=[round(r, 2) for r in reopened],
        )
    finally:
        sim.stop()
        backend.close()


@pytest.mark.timeout(600)
def test_boot_without_adapter_then_plug_it_in(
    guest: Guest, broker: Mosquitto, tmp_path: Path
) -> None:
    guest.usb_serial_id = None  # no adapter at boot
    guest.start()
    serial = "LAB0001"
    stable = f"/dev/edge/serial/0403_6001_{serial}-if00"
    devices = {lab.DEVICE: {**lab.SCANNER_CFG, "port": stable}}
    backend = lab.configure(guest, broker.port, devices, PASSWORD)
    try:
        assert backend.subscribed.wait(10)
        lab.start_service(guest)
        mods = guest.run("lsmod | grep -E '^(usbserial|ftdi_sio)' || true").out
        t0 = time.monotonic()
        guest.plug_usb_serial(serial)
        guest.wait_until(f"test -e {stable}", timeout=30, interval=0.2)
        timing("boot without adapter: plugged -> udev stable name", time.monotonic() - t0)
        assert guest.usb is not None
        guest.usb.serial = serial
        sim = lab.scanner(guest, rate=10.0, seed=44)
        time.sleep(3.0)  # the supervisor's reopen backoff finds the port
        sim.start(count=30)
        sim.wait(30)
        ok = backend.wait_for(lambda: len(backend.readings()) >= 30, timeout=60)
        journal = "\n".join(lab.journal_lines(guest)[-30:])
        assert ok, (
            f"{len(backend.readings())} of 30 readings arrived; modules at start: {mods!r}\n"
            f"{journal}"
        )
        guest.run("systemctl stop edge-agent.service", timeout=60)
        db = lab.fetch_queue(guest, tmp_path / "queue")
        ledger.check(
            "vm_boot_without_adapter",
            backend,
            db,
            emitted=ledger.scanner_emitted(lab.DEVICE, sim),
            devices=[lab.DEVICE],
        )
    finally:
        backend.close()
