"""Scenarios 2 and 3: the shipped, hardened unit under real systemd.

2. A scanner on the emulated USB serial adapter (FTDI, ``/dev/serial/by-id/...``), the agent
   publishing to a broker that wants a password, given by ``LoadCredential=``; the control
   socket (``edge-agent status`` through the wrapper) and the metrics endpoint work under the
   sandbox; the password appears in no command line and no journal line; the ledger.
3. Watchdog: the writer thread hangs for good right after a COMMIT
   (``EDGE_AGENT_FAULT=wedge_after_commit:10``); the petting stops, systemd sends SIGABRT,
   PYTHONFAULTHANDLER puts every thread's stack in the journal, ``Restart=on-failure`` brings
   the agent back; no committed reading is lost (the ledger). ``WatchdogSec=`` is shortened to
   5 s by a drop-in to keep the test short. (A root process holding the queue's SQLite write
   lock is no wedge: the commit gives up after the busy timeout and retries, the watchdog
   keeps being pinged; the lab saw no abort in 60 s that way.)
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from simulators.mosquitto import Mosquitto
from tests import ledger
from tests.harness import Subscriber, queue_rows
from tests.vm import lab
from tests.vm.conftest import PASSWORD, timing
from tests.vm.qemu import Guest, GuestError

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "edge-agent.service"

pytestmark = pytest.mark.vm


def boot_with_config(guest: Guest, broker: Mosquitto, extra: str = "") -> None:
    guest.start()
    timing("boot (installed image)", guest.boot_s)
    assert guest.usb is not None
    devices = {lab.DEVICE: {**lab.SCANNER_CFG, "port": guest.usb.by_id}}
    lab.write_config(guest, lab.agent_toml(broker.port, devices, extra), PASSWORD)


@pytest.mark.timeout(600)
def test_hardened_unit_with_usb_serial_scanner_and_credential(
    guest: Guest, broker: Mosquitto, tmp_path: Path
) -> None:
    boot_with_config(guest, broker, "[metrics]\nenabled = true\nport = 9108")
    # the unit systemd runs is the shipped one, byte for byte
    (guest.share / "unit.expected").write_text(UNIT.read_text())
    guest.run("cmp /mnt/lab/unit.expected /etc/systemd/system/edge-agent.service")
    backend = Subscriber(broker.port, auth=("backend", "backend-pw"))
    try:
        assert backend.subscribed.wait(10)
        guest.run("systemctl reset-failed edge-agent.service || true")
        timing("systemctl start -> READY (hardened)", lab.start_service(guest))
        props = guest.run(
            "systemctl show edge-agent.service -p DevicePolicy -p MemoryDenyWriteExecute "
            "-p NoNewPrivileges -p ProtectSystem -p User -p LoadCredential"
        ).out
        assert "DevicePolicy=closed" in props, props
        assert "MemoryDenyWriteExecute=yes" in props, props
        assert "User=edge-agent" in props, props

        sim = lab.scanner(guest, rate=10.0, seed=2)
        sim.start(count=50)
        sim.wait(30)
        assert backend.wait_for(lambda: len(backend.readings()) >= 50, timeout=60), (
            f"{len(backend.readings())} of 50 readings arrived"
        )
        # control socket (wrapper, as root: runs as edge-agent) and metrics under the sandbox
        st = json.loads(guest.run("edge-agent status --json").out)
        assert st, st
        metrics = guest.run(
            'python3 -c "import urllib.request; print(urllib.request.urlopen('
            "'http://127.0.0.1:9108/metrics', timeout=10).read().decode())\""
        ).out
        assert "edge_agent" in metrics, metrics[:500]
        # the password: not on any command line, not in the journal
        cmdlines = guest.run("cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' ' || true").out
        assert PASSWORD not in cmdlines
        journal = guest.run("journalctl -b --no-pager -o cat").out
        assert PASSWORD not in journal
        # nothing in the sandbox was refused: no EPERM/EACCES in the agent's own log
        denied = [
            ln
            for ln in lab.journal_lines(guest)
            if "Operation not permitted" in ln or "Permission denied" in ln
        ]
        assert not denied, denied[:5]
        security = guest.run(
            "systemd-analyze security edge-agent.service --no-pager | tail -1", check=False
        ).out
        print(f"live exposure: {security.strip()}")

        guest.run("systemctl stop edge-agent.service", timeout=60)
        db = lab.checked_queue(guest, tmp_path / "queue")
        fig = ledger.check(
            "vm_hardened_unit",
            backend,
            db,
            emitted=ledger.scanner_emitted(lab.DEVICE, sim),
            devices=[lab.DEVICE],
        )
        assert fig.committed == 50, fig
    finally:
        backend.close()


#: WatchdogSec shortened for the test; the fault armed through a file the test removes once
#: the agent runs, so the restarted agent starts without it.
WATCHDOG_DROPIN = "[Service]\nWatchdogSec=5s\nEnvironmentFile=-/run/vmlab-fault.env\n"
WEDGE_AT = 10


@pytest.mark.timeout(600)
def test_watchdog_aborts_a_wedged_writer_and_restarts(
    guest: Guest, broker: Mosquitto, tmp_path: Path
) -> None:
    boot_with_config(guest, broker)
    guest.run(
        "mkdir -p /etc/systemd/system/edge-agent.service.d\n"
        f"printf '{WATCHDOG_DROPIN}' >/etc/systemd/system/edge-agent.service.d/watchdog.conf\n"
        f"echo EDGE_AGENT_FAULT=wedge_after_commit:{WEDGE_AT} >/run/vmlab-fault.env\n"
        "systemctl daemon-reload"
    )
    backend = Subscriber(broker.port, auth=("backend", "backend-pw"))
    try:
        assert backend.subscribed.wait(10)
        lab.start_service(guest)
        guest.run("rm /run/vmlab-fault.env")
        pid0 = guest.run("systemctl show -p MainPID --value edge-agent").out.strip()
        assert pid0 != "0"
        # the agent has the port open (what the adapter holds before the open is purged)
        guest.wait_until(
            "journalctl -u edge-agent -o cat | grep device_state | grep -q connected", timeout=30
        )
        sim = lab.scanner(guest, rate=10.0, seed=3)
        t_wedge = time.time()  # from here on the writer wedges after its WEDGE_AT-th commit
        t0 = time.monotonic()
        sim.start()
        # systemd: watchdog timeout -> SIGABRT -> every thread's stack -> restart
        try:
            guest.wait_until(
                "journalctl -u edge-agent --no-pager -o cat | grep -q 'Watchdog timeout'",
                timeout=60,
                interval=0.5,
            )
        except GuestError as err:
            state = guest.run(
                "cat /proc/$(systemctl show -p MainPID --value edge-agent)/environ | tr '\\0' '\\n'"
                " | grep EDGE_AGENT; systemctl status --no-pager edge-agent | head -5; "
                "journalctl -u edge-agent --no-pager -o cat | tail -25",
                check=False,
            ).out
            msg = f"{err}\n{len(backend.readings())} readings at the backend\n{state}"
            raise AssertionError(msg) from err
        abort_s = time.monotonic() - t0
        timing("readings start -> wedge -> watchdog SIGABRT", abort_s)
        guest.wait_until(
            'test "$(systemctl show -p NRestarts --value edge-agent)" -ge 1 && '
            "systemctl is-active -q edge-agent && "
            f'test "$(systemctl show -p MainPID --value edge-agent)" != {pid0}',
            timeout=90,
            interval=0.5,
        )
        restart_s = time.monotonic() - t0
        t_back = time.time()
        timing("readings start -> wedge -> restarted and READY", restart_s)
        time.sleep(3.0)  # the restarted agent reads the scanner again
        sim.stop()
        time.sleep(2.0)
        journal = guest.run("journalctl -u edge-agent --no-pager -o cat").out
        assert "Fatal Python error: Aborted" in journal, journal[-3000:]
        threads = journal.count("most recent call first")
        assert threads >= 3, f"only {threads} thread stacks in the journal:\n{journal[-3000:]}"
        guest.run("systemctl stop edge-agent.service", timeout=60)
        db = lab.checked_queue(guest, tmp_path / "queue")
        assert backend.wait_for(
            lambda: {r["id"] for _, r in backend.readings()} >= {r["id"] for r in queue_rows(db)},
            timeout=30,
        )
        fig = ledger.check(
            "vm_watchdog",
            backend,
            db,
            emitted=ledger.scanner_emitted(lab.DEVICE, sim),
            # readings read but not committed when SIGABRT came, and those written while no
            # agent had the port open, are not the agent's to keep
            downtime=[(t_wedge, t_back + 1.0)],
            devices=[lab.DEVICE],
            abort_s=round(abort_s, 1),
            restart_s=round(restart_s, 1),
            thread_stacks=threads,
            wedge_at_commit=WEDGE_AT,
        )
        assert fig.committed >= WEDGE_AT and fig.emitted_received > 0, fig
    finally:
        backend.close()
