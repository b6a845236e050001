"""End to end for HID scanners: simulator -> spool dir -> pyusb in ``edge-agent run`` -> broker.

The daemon is a real subprocess started with ``EDGE_AGENT_USB_BACKEND=sim:<dir>``, so its HID
driver runs the real pyusb stack over the simulator's backend inside the daemon process; this
test process plugs devices and scans codes through ``SpoolDevice`` (simulators/hid_scanner).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from simulators.hid_scanner import HidScannerSim, HidSimConfig, SpoolDevice
from simulators.mosquitto import Mosquitto
from tests.harness import Subscriber, agent_config, queue_rows

VID, PID = 0x0C2E, 0x0B8F
#: Symbology names the backend must see per AIM id (docs/protocols.md §2.5, written independently).
SYMBOLOGY = {"]C0": "code128", "]C1": "gs1-128", "]d2": "gs1-datamatrix", "]Q1": "qr"}
Factory = Callable[..., Any]


def hid_device(serial: str, mode: str) -> dict[str, object]:
    return {"type": "hid_scanner", "vid": VID, "pid": PID, "serial": serial, "mode": mode,
            "aim_ids": mode == "keyboard"}  # fmt: skip


def received(backend: Subscriber, device: str) -> list[dict[str, Any]]:
    return [r for _, r in backend.readings() if r["device"] == device]


def scanned(sim: HidScannerSim) -> list[tuple[str, str | None, str | None]]:
    """(value, aim, symbology) of every code the agent must publish, in scan order."""
    return [
        (t.value, t.aim, SYMBOLOGY[t.aim] if t.aim else None)
        for t in sim.truth
        if t.kind == "barcode" and t.delivered
    ]


def start(tmp_path: Path, broker: Mosquitto, agent_factory: Factory, **devices: SpoolDevice) -> Any:
    table = {name: hid_device(str(d.dir.name).upper(), d.mode) for name, d in devices.items()}
    cfg = agent_config(tmp_path, broker.port, table)
    agent = agent_factory(cfg, env={"EDGE_AGENT_USB_BACKEND": f"sim:{tmp_path / 'usb'}"})
    agent.start()
    return agent


def test_both_modes_every_code_arrives_with_value_and_symbology(
    tmp_path: Path, broker: Mosquitto, backend: Subscriber, agent_factory: Factory
) -> None:
    usb = tmp_path / "usb"
    kbd_dev = SpoolDevice(usb, "kbd-1", vid=VID, pid=PID, serial="KBD-1", mode="keyboard")
    pos_dev = SpoolDevice(usb, "pos-1", vid=VID, pid=PID, serial="POS-1", mode="pos")
    kbd = HidScannerSim(kbd_dev, HidSimConfig(
        mode="keyboard", rate=30, seed=21, scanner_no=1,
        faults={"drop_release": 0.2, "unknown_key": 0.04, "rollover": 0.04, "partial": 0.02},
    ))  # fmt: skip
    pos = HidScannerSim(pos_dev, HidSimConfig(
        mode="pos", rate=30, seed=22, scanner_no=2,
        faults={"bad_length": 0.05, "missing_packet": 0.03},
    ))  # fmt: skip
    agent = start(tmp_path, broker, agent_factory, hid_kbd=kbd_dev, hid_pos=pos_dev)
    assert agent.wait_log("usb_backend_override", 5)  # the hook is visible in the daemon's log
    kbd.start(count=150)
    pos.start(count=150)
    kbd.wait(30)
    pos.wait(30)
    for dev, sim in (("hid_kbd", kbd), ("hid_pos", pos)):
        want = scanned(sim)
        assert len(want) > 120, len(want)
        got = received(backend, dev)
        deadline = time.monotonic() + 20
        while len(got) < len(want) and time.monotonic() < deadline:
            time.sleep(0.05)
            got = received(backend, dev)
        assert [(r["value"], r.get("aim"), r.get("symbology")) for r in got] == want
        assert [r["seq"] for r in got] == list(range(1, len(got) + 1))
        size = 8 if dev == "hid_kbd" else 64
        assert all(len(bytes.fromhex(r["raw"])) % size == 0 for r in got)
    assert any("\x1d" in r["value"] for r in received(backend, "hid_pos"))  # GS kept (GS1)
    assert any("\x1d" in r["value"] for r in received(backend, "hid_kbd"))
    time.sleep(0.5)  # let a last partial code time out
    agent.stop()
    rejects = Counter(
        (e["device"], e["reason"]) for e in agent.events() if e["event"] == "frame_rejected"
    )
    for dev, sim in (("hid_kbd", kbd), ("hid_pos", pos)):
        truth = Counter(t.reason for t in sim.truth if t.kind == "reject" and t.delivered)
        assert truth and {r: rejects[(dev, r)] for r in truth} == dict(truth), (dev, rejects)
    rows = queue_rows(tmp_path / "state" / "queue.db")
    assert len(rows) == len(scanned(kbd)) + len(scanned(pos))


def test_unplug_replug_in_the_daemon_resumes_within_2s(
    tmp_path: Path, broker: Mosquitto, backend: Subscriber, agent_factory: Factory
) -> None:
    dev = SpoolDevice(tmp_path / "usb", "kbd-2", vid=VID, pid=PID, serial="KBD-2", mode="keyboard")
    sim = HidScannerSim(dev, HidSimConfig(mode="keyboard", rate=0, seed=23))
    start(tmp_path, broker, agent_factory, hid_kbd=dev)
    delays = []

    def arrived(value: str) -> bool:
        return backend.wait_for(lambda: value in {r["value"] for _, r in backend.readings()}, 5)

    for _ in range(3):
        assert arrived(sim.emit().value)
        dev.unplug()
        time.sleep(1.0)
        replugged = time.monotonic()
        dev.replug()
        assert arrived(sim.emit().value)  # scanned right after the replug
        delays.append(time.monotonic() - replugged)
    assert max(delays) < 2.0, delays
    states = [json.loads(p)["state"] for p in backend.payloads("/device/hid_kbd/state")]
    assert states.count("reconnecting") >= 3 and states[-1] == "connected", states
