"""End to end with real parts: scale simulators -> ptys -> `edge-agent run` -> Mosquitto -> backend.

Every settled weight a simulator delivered must arrive exactly once, in order, with the grams,
unit and stable flag the device showed; motion never arrives; rejects are counted by reason.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from simulators._scale_model import Display, ScaleSim, Timing
from simulators.mosquitto import Mosquitto
from simulators.mtsics_scale import MtSicsSim, MtSicsSimConfig
from simulators.pty_port import PtyPort
from simulators.sma_scale import SmaSim, SmaSimConfig
from simulators.toledo_continuous import ToledoSim, ToledoSimConfig
from tests.harness import Agent, Subscriber, agent_config, queue_rows, schema_validator

FAST = Timing(empty_s=(0.3, 0.5), motion_s=(0.3, 0.6), hold_s=(0.5, 0.8), unload_s=(0.1, 0.2))
FAULTS = {"noise": 0.04, "garble": 0.04, "fragment": 0.3, "overload": 0.15}
Sims = dict[str, tuple[ScaleSim, dict[str, object]]]


@pytest.fixture
def scales(tmp_path: Path) -> Iterator[Sims]:
    """Four simulated scales behind stable symlinks, and the device table of each."""

    def port(name: str) -> PtyPort:
        p = PtyPort(tmp_path / name)
        p.plug()
        return p

    kg, lb, g = Display("kg", 3, 5), Display("lb", 2, 2), Display("g", 0, 5)
    common: dict[str, Any] = {"timing": FAST, "faults": FAULTS}
    sims: Sims = {
        "mtsics_1": (MtSicsSim(port("mtsics"), MtSicsSimConfig(display=kg, seed=21, **common)),
                     {"type": "mtsics_scale", "poll_interval_ms": 100}),
        "toledo_1": (ToledoSim(port("toledo"), ToledoSimConfig(display=lb, seed=22, rate=15,
                                                               **common)),
                     {"type": "toledo_continuous"}),
        "sma_poll": (SmaSim(port("sma-p"), SmaSimConfig(display=g, seed=23, **common)),
                     {"type": "sma_scale", "poll_interval_ms": 100}),
        "sma_stream": (SmaSim(port("sma-c"), SmaSimConfig(display=kg, seed=24, rate=10, **common)),
                       {"type": "sma_scale", "mode": "continuous"}),
    }  # fmt: skip
    for sim, table in sims.values():
        table.update(port=str(sim.port.link), max_capacity_g=30000)
    yield sims
    for sim, _ in sims.values():
        sim.stop()
        sim.port.close()


def frame_ok(kind: str, raw: bytes) -> bool:
    """The raw bytes are one whole frame of the device's protocol."""
    if kind == "mtsics_scale":
        return raw.startswith(b"S S ") and raw.endswith(b"\r\n")
    if kind == "toledo_continuous":
        return len(raw) == 18 and raw[0] == 0x02 and raw[16] == 0x0D
    return len(raw) == 20 and raw[0] == 0x0A and raw[-1] == 0x0D


def received(backend: Subscriber, device: str) -> list[dict[str, Any]]:
    return [r for _, r in backend.readings() if r["device"] == device]


def test_every_settled_weight_arrives_with_grams_unit_and_stable(
    tmp_path: Path, broker: Mosquitto, backend: Subscriber, scales: Sims,
    agent_factory: Callable[[Path], Agent],
) -> None:  # fmt: skip
    devices = {dev: table for dev, (_, table) in scales.items()}
    agent = agent_factory(agent_config(tmp_path, broker.port, devices))
    agent.start()
    for sim, _ in scales.values():
        sim.start()
    time.sleep(9)
    for sim, _ in scales.values():
        sim.stop()
    want = {
        dev: [(t.grams, t.unit, True) for t in sim.settled()] for dev, (sim, _) in scales.items()
    }
    total = sum(map(len, want.values()))
    assert backend.wait_for(lambda: len(backend.readings()) >= total, 15), (total, want)
    time.sleep(0.5)  # nothing more may arrive
    agent.stop()
    validators = schema_validator()
    for dev, (_sim, table) in scales.items():
        got = received(backend, dev)
        assert [(r["value"], r["unit"], r["stable"]) for r in got] == want[dev], dev
        assert len(got) >= 3, (dev, len(got))
        assert [r["seq"] for r in got] == list(range(1, len(got) + 1))
        for r in got:
            validators["reading.v1.json"].validate(r)
            assert r["kind"] == "weight" and r["stable"] is True
            assert r["check"] == ("checksum" if table["type"] == "toledo_continuous" else "none")
            assert frame_ok(str(table["type"]), bytes.fromhex(r["raw"])), r["raw"]
    rejects = Counter(
        (e["device"], e["reason"]) for e in agent.events() if e["event"] == "frame_rejected"
    )
    seen: Counter[str] = Counter()
    for dev, (sim, table) in scales.items():
        truth = Counter(t.kind for t in sim.truth if t.delivered)
        garbled = "checksum" if table["type"] == "toledo_continuous" else "garbled"
        for reason in (garbled, "over_capacity", "noise"):
            assert rejects[(dev, reason)] == truth[reason], (dev, reason, rejects, truth)
            seen["garbled" if reason == garbled else reason] += truth[reason]
    assert min(seen.values()) > 0 and len(seen) == 3, seen
    rows = queue_rows(tmp_path / "state" / "queue.db")
    assert len(rows) == total and {r["id"] for r in rows} <= {
        r["id"] for _, r in backend.readings()
    }


def test_replug_and_stalled_indicator_recover(
    tmp_path: Path, broker: Mosquitto, backend: Subscriber, scales: Sims,
    agent_factory: Callable[[Path], Agent],
) -> None:  # fmt: skip
    toledo, mtsics = scales["toledo_1"][0], scales["mtsics_1"][0]
    for sim in (toledo, mtsics):
        sim.cfg.faults = {}
        sim.cfg.stall_s = 2.5
    devices = {dev: scales[dev][1] for dev in ("toledo_1", "mtsics_1")}
    agent = agent_factory(agent_config(tmp_path, broker.port, devices))
    agent.start()
    toledo.start()
    mtsics.start()
    time.sleep(2)
    t_fault = time.time()
    toledo.inject("stall")  # connected but silent for 2.5 s: > stall_timeout_ms (2 s)
    mtsics.unplug(1.0)
    time.sleep(5)
    for sim in (toledo, mtsics):
        sim.stop()
    for dev, sim in (("toledo_1", toledo), ("mtsics_1", mtsics)):
        settled = [t.grams for t in sim.settled()]
        after = [t.grams for t in sim.settled() if t.t > t_fault + 0.1]
        assert after, (dev, settled)  # weights settled after the fault...
        n = len(settled)

        def arrived(d: str = dev, n: int = n) -> bool:
            return len(received(backend, d)) >= n - 1

        assert backend.wait_for(arrived, 10)
        got = [r["value"] for r in received(backend, dev)]
        assert got[-len(after) :] == after, (dev, got, after)  # ...all arrived, in order
        assert len(got) >= len(settled) - 1  # at most the one in the pulled cable is lost
        states = [json.loads(p)["state"] for p in backend.payloads(f"/device/{dev}/state")]
        assert "reconnecting" in states and states[-1] == "connected", (dev, states)
    agent.stop()


def test_zero_and_tare_through_the_control_socket(
    tmp_path: Path, broker: Mosquitto, scales: Sims, agent_factory: Callable[[Path], Agent]
) -> None:
    """The declared actions of a driver (``ACTIONS``) run in its device thread and answer with
    the device's reply; an action a driver does not declare is refused in words."""
    from edge_agent import control

    calm = MtSicsSim(
        PtyPort(tmp_path / "calm"), MtSicsSimConfig(display=Display("kg", 3, 5), seed=5)
    )
    calm.port.plug()
    toledo = scales["toledo_1"]
    devices = {
        "scale_1": {
            "type": "mtsics_scale",
            "port": str(calm.port.link),
            "poll_interval_ms": 100,
            "max_capacity_g": 30000,
        },
        "toledo_1": toledo[1],
    }
    agent = agent_factory(agent_config(tmp_path, broker.port, devices))
    agent.start()
    calm.start()
    toledo[0].start()
    sock = tmp_path / "ctl.sock"
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            st = control.request(sock, {"cmd": "status"})["status"]
            if st["devices"]["scale_1"]["state"] == "connected":
                break
            time.sleep(0.1)
        before = sum(t.kind == "command" for t in calm.truth)
        zero = control.request(sock, {"cmd": "device", "device": "scale_1", "action": "zero"})
        assert zero["ok"] and zero["result"] in ("A", "I", "+", "-"), zero
        tare = control.request(sock, {"cmd": "device", "device": "scale_1", "action": "tare"})
        assert tare["ok"] and tare["result"] in ("S", "I"), tare
        deadline = time.monotonic() + 2  # the simulator records a reply just after sending it
        while sum(t.kind == "command" for t in calm.truth) < before + 2:
            assert time.monotonic() < deadline, [t.kind for t in calm.truth[-5:]]
            time.sleep(0.05)
        bad = control.request(sock, {"cmd": "device", "device": "scale_1", "action": "explode"})
        assert bad == {
            "ok": False,
            "error": "scale_1 (mtsics_scale) does not support 'explode' (actions: tare, zero)",
        }
        none = control.request(sock, {"cmd": "device", "device": "toledo_1", "action": "zero"})
        assert none["error"] == (
            "toledo_1 (toledo_continuous) does not support 'zero' (actions: none)"
        )
        gone = control.request(sock, {"cmd": "device", "device": "nope", "action": "zero"})
        assert gone["error"] == "no device 'nope' (devices: scale_1, toledo_1)"
    finally:
        calm.stop()
        calm.port.close()
