"""Scenario 6: a keyboard-wedge scanner. qemu's ``usb-kbd`` (VID:PID 0627:0001) on the xHCI bus
is typed into through QMP ``input-send-event``; the agent's HID driver claims it through pyusb
(detaching usbhid) under the unit's device policy (``DeviceAllow=char-usb_device``), the group
comes from a site line in 99-edge-agent-local.rules, as install.md tells a site with another
vendor's scanner to add. Every typed code arrives (the ledger).
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

DEVICE = "wedge_1"
#: qcode names of the characters the codes use (US layout).
QCODES = {**{c: c.lower() for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"}, **{d: d for d in "0123456789"}}

LOCAL_RULE = 'SUBSYSTEM=="usb", ENV{DEVTYPE}=="usb_device", ATTR{idVendor}=="0627", '
LOCAL_RULE += 'GROUP="edge-agent", MODE="0660"\n'

pytestmark = pytest.mark.vm


def key(guest: Guest, qcode: str, down: bool) -> None:
    assert guest.qmp is not None
    # no device= : with -display none there is no console to bind it to; events go to the
    # active keyboard, the usb-kbd once the guest's usbhid enabled it
    guest.qmp.command(
        "input-send-event",
        events=[{"type": "key", "data": {"down": down, "key": {"type": "qcode", "data": qcode}}}],
    )


def type_code(guest: Guest, text: str) -> None:
    """Type ``text`` then Enter, as a wedge scanner does (shift for capitals)."""
    for ch in text:
        shift = ch.isalpha() and ch.isupper()
        if shift:
            key(guest, "shift", True)
        key(guest, QCODES[ch], True)
        time.sleep(0.015)
        key(guest, QCODES[ch], False)
        if shift:
            key(guest, "shift", False)
        time.sleep(0.015)
    key(guest, "ret", True)
    time.sleep(0.015)
    key(guest, "ret", False)


@pytest.mark.timeout(600)
def test_keyboard_wedge_scanner_through_pyusb(
    guest: Guest, broker: Mosquitto, tmp_path: Path
) -> None:
    guest.usb_kbd = True
    guest.start()
    guest.run(
        f"printf '%s' '{LOCAL_RULE}' >>/etc/udev/rules.d/99-edge-agent-local.rules\n"
        "udevadm control --reload && udevadm trigger --action=change --subsystem-match=usb\n"
        "udevadm settle"
    )
    node = guest.run(
        "for d in /sys/bus/usb/devices/*; do "
        '[ "$(cat $d/idVendor 2>/dev/null)" = 0627 ] && '
        'printf "/dev/bus/usb/%03d/%03d\\n" $(cat $d/busnum) $(cat $d/devnum); done; true'
    ).out.split()
    assert node, "no usb-kbd in the guest"
    perms = guest.run(f"stat -c '%G %a' {node[0]}").out.strip()
    assert perms == "edge-agent 660", perms
    devices = {
        DEVICE: {
            "type": "hid_scanner",
            "vid": 0x0627,
            "pid": 0x0001,
            "mode": "keyboard",
            # under software emulation a key report can lag behind the previous one
            "key_timeout_ms": 2000,
        }
    }
    backend = lab.configure(guest, broker.port, devices, PASSWORD)
    try:
        assert backend.subscribed.wait(10)
        lab.start_service(guest)
        # the driver claimed the interface: usbhid detached
        guest.wait_until(
            f"! ls /sys/bus/usb/drivers/usbhid/ | grep -q '^{Path(node[0]).name}' && "
            "journalctl -u edge-agent -o cat | grep device_state | grep -q connected",
            timeout=30,
        )
        codes = [f"SF{n:010d}" for n in range(1, 11)]
        emitted = []
        t0 = time.monotonic()
        for code in codes:
            type_code(guest, code)
            emitted.append(ledger.Emitted(DEVICE, code, time.time()))
            time.sleep(0.3)
        timing("typing 10 codes through QMP", time.monotonic() - t0)
        ok = backend.wait_for(lambda: len(backend.readings()) >= len(codes), timeout=30)
        journal = "\n".join(lab.journal_lines(guest)[-30:])
        assert ok, f"{[r['value'] for _, r in backend.readings()]}\n{journal}"
        guest.run("systemctl stop edge-agent.service", timeout=60)
        db = lab.fetch_queue(guest, tmp_path / "queue")
        ledger.check("vm_hid_wedge", backend, db, emitted=emitted, devices=[DEVICE])
    finally:
        backend.close()
