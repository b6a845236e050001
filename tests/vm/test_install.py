"""Scenario 1: install from scratch on a bare Debian system under real systemd and udev.

The bare base image boots with the emulated USB serial adapter; the checkout and an offline
wheelhouse made on the host are copied in (the guest has no network for pip) and
``systemd/install.sh --wheels`` runs as root on the live system. Then: the technician's
config and password file,
``systemctl start`` (Type=notify: returns at READY=1), ``edge-agent status`` from a
technician's shell through the PATH wrapper, ``systemctl reload`` (a device added in place),
journald holding one JSON object per line, and the ledger over readings from the scanner on the
emulated USB serial adapter.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from simulators.mosquitto import Mosquitto
from tests import ledger
from tests.vm import lab
from tests.vm.conftest import PASSWORD, Wheels, timing
from tests.vm.image import BaseImage
from tests.vm.qemu import Guest

pytestmark = pytest.mark.vm


@pytest.mark.timeout(900)
def test_install_from_scratch(
    vm_image: BaseImage, vm_wheels: Wheels, broker: Mosquitto, tmp_path: Path
) -> None:
    guest = Guest(vm_image, tmp_path / "guest")
    try:
        guest.start()
        timing("boot (bare image)", guest.boot_s)
        shutil.copytree(vm_wheels.path, guest.share / "wheels")
        out, secs = lab.install(guest, guest.share / "wheels")
        timing("install.sh from scratch in the guest", secs)
        assert "install.sh: done" in out, out
        assert "Next steps:" in out, out
        st = guest.run(
            "systemctl is-enabled edge-agent.service; systemctl is-active edge-agent.service; "
            "id edge-agent; ls -l /dev/edge/serial/",
            check=False,
        ).out
        # enabled, never started (the config and password are not there yet)
        assert "enabled\ninactive" in st, st
        # install.sh reloaded udev: the adapter got its generic stable name
        assert "0403_" in st, st
        configure_and_run(guest, broker, tmp_path)
    finally:
        guest.close()
        print(f"guest files (console.log, qemu.stderr, share/): {guest.dir}")


def configure_and_run(guest: Guest, broker: Mosquitto, tmp_path: Path) -> None:
    """The guide's steps after install.sh, then the checks of scenario 1."""

    by_id = guest.usb.by_id if guest.usb else ""
    devices = {lab.DEVICE: {**lab.SCANNER_CFG, "port": by_id}}
    backend = lab.configure(guest, broker.port, devices, PASSWORD)
    try:
        assert backend.subscribed.wait(10)
        start_s = lab.start_service(guest)
        timing("systemctl start -> READY", start_s)
        assert guest.run("systemctl is-active edge-agent.service").out.strip() == "active"

        # a technician (group edge-agent) runs the PATH wrapper from a login shell
        guest.run("usermod -aG edge-agent,dialout,plugdev tech")
        res = guest.run("runuser -l tech -c 'edge-agent status'", check=False)
        assert res.rc == 0, res.out
        assert "broker" in res.out, res.out

        sim = lab.scanner(guest, rate=10.0)
        sim.start(count=30)
        sim.wait(30)
        assert backend.wait_for(lambda: len(backend.readings()) >= 30, timeout=60), (
            f"{len(backend.readings())} of 30 readings arrived"
        )

        # systemctl reload: a second device added in place, the queue keeps running
        devices["scanner_2"] = {**lab.SCANNER_CFG, "port": "/dev/edge/scanner-2"}
        lab.write_config(guest, lab.agent_toml(broker.port, devices))
        pid_before = guest.run("systemctl show -p MainPID --value edge-agent").out.strip()
        guest.run("systemctl reload edge-agent.service")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            reloaded = [e for e in lab.journal_events(guest) if e.get("event") == "reloaded"]
            if reloaded:
                break
            time.sleep(0.5)
        assert reloaded, lab.journal_lines(guest)[-20:]
        assert reloaded[-1]["devices"] == sorted(devices), reloaded[-1]
        assert guest.run("systemctl show -p MainPID --value edge-agent").out.strip() == pid_before

        guest.run("systemctl stop edge-agent.service", timeout=60)
        # journald: the service's output is one JSON object per line
        lines = lab.journal_lines(guest)
        assert lines
        bad = []
        for ln in lines:
            try:
                assert isinstance(json.loads(ln), dict)
            except (ValueError, AssertionError):
                bad.append(ln)
        assert not bad, f"{len(bad)} journal lines are not one JSON object: {bad[:5]}"
        db = lab.checked_queue(guest, tmp_path / "queue")
        fig = ledger.check(
            "vm_install",
            backend,
            db,
            emitted=ledger.scanner_emitted(lab.DEVICE, sim),
            devices=[lab.DEVICE],
        )
        assert fig.committed == 30, fig
    finally:
        backend.close()
