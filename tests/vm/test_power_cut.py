"""Scenario 5: power cuts. qemu is SIGKILLed five times at random moments while the scanner
writes at a steady rate and the broker is unreachable part of the time; the guest boots again on
the same disk, the enabled unit starts the agent, and after every boot ``PRAGMA
integrity_check`` is ok. At the end every reading the agent committed (the queue's own record)
reached the backend, under one id each (re-sends reuse the id), and every reading the scanner
wrote was received or fell in a cut's window (written in the last ``LOSS_WINDOW_S`` before the
cut, not yet committed, or while the guest was down).

What this models: the guest's RAM and page cache vanish; what qemu wrote to the disk image stays
(the host's page cache): a disk that honours flushes. Not a disk's own volatile write cache.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from simulators.mosquitto import Mosquitto
from tests import ledger
from tests.harness import Subscriber, queue_rows
from tests.vm import lab
from tests.vm.conftest import PASSWORD, timing
from tests.vm.qemu import Guest

CUTS = 5
#: Readings written this long before a cut may still be in the USB/tty path or the writer's
#: group commit, i.e. never committed: not the agent's to keep.
LOSS_WINDOW_S = 2.0

pytestmark = pytest.mark.vm


@pytest.mark.timeout(900)
def test_power_cuts(guest: Guest, broker: Mosquitto, tmp_path: Path) -> None:
    rng = random.Random(5)
    guest.start()
    assert guest.usb is not None
    devices = {lab.DEVICE: {**lab.SCANNER_CFG, "port": guest.usb.by_id}}
    lab.write_config(guest, lab.agent_toml(broker.port, devices), PASSWORD)
    # enabled (the image is not): after every cut, systemd starts the agent at boot
    guest.run("systemctl enable edge-agent.service")
    backend = Subscriber(broker.port, auth=("backend", "backend-pw"))
    assert backend.subscribed.wait(10)
    lab.start_service(guest)
    sim = lab.scanner(guest, rate=10.0, seed=5)
    windows: list[tuple[float, float]] = []
    boots: list[float] = []
    checks: list[str] = []
    try:
        for i in range(CUTS):
            sim.start()
            run_s = rng.uniform(2.0, 6.0)
            if i % 2 == 1:  # the broker goes away for part of the run: the queue backs up
                time.sleep(run_s / 3)
                broker.stop()
                time.sleep(run_s * 2 / 3)
            else:
                time.sleep(run_s)
            t_cut = time.time()
            guest.power_cut()
            sim.stop()
            if broker.proc is None:
                broker.start()
            t0 = time.monotonic()
            guest.start(new_disk=False)
            sim.port.unplug()
            sim.port.plug()  # socat's new pty
            guest.wait_until("systemctl is-active -q edge-agent", timeout=90, interval=0.5)
            boots.append(time.monotonic() - t0)
            windows.append((t_cut - LOSS_WINDOW_S, time.time() + 0.5))
            checks.append(lab.integrity_check(guest))
            assert checks[-1] == "ok", checks
        sim.start()
        time.sleep(3.0)
        sim.stop()
        time.sleep(1.0)
        guest.run("systemctl stop edge-agent.service", timeout=60)
        db = lab.fetch_queue(guest, tmp_path / "queue")
        want = {r["id"] for r in queue_rows(db)}
        backend.wait_for(lambda: want <= {r["id"] for _, r in backend.readings()}, timeout=30)
        for b in boots:
            timing("power cut -> agent active again", b)
        fig = ledger.check(
            "vm_power_cut",
            backend,
            db,
            emitted=ledger.scanner_emitted(lab.DEVICE, sim),
            downtime=windows,
            devices=[lab.DEVICE],
            max_dup_ratio=0.5,  # re-sends after a cut (PUBACK arrived, not yet recorded)
            cuts=CUTS,
            integrity=checks,
        )
        print(f"power cuts: {fig}")
        assert fig.committed > 0 and fig.emitted_received > 0, fig
    finally:
        sim.stop()
        backend.close()
