"""End to end with the tunnel scanners: simulators on TCP and ptys -> `edge-agent run` -> Mosquitto.

Four devices at once, each with its fault modes on:

* ``sick_tcp``: SICK CLV on TCP, gate counter + code count, 1-2 codes per gate, late and
  repeated telegrams, a doubled STX, a wrong code count, TCP resets mid-telegram.
* ``sick_pty``: SICK CLV on a pty, gate counter, heartbeat after 0.2 s without a telegram. The
  reader stalls for 1.8 s at times, so the driver's 0.8 s heartbeat watchdog reconnects.
* ``cognex``: DataMan on TCP, triggered by the driver (``||1:n>TRIGGER ON`` every 40 ms), extended
  DMCC responses with the XOR checksum, and the trigger index as the gate.
* ``datalogic``: Datalogic on a pty, 2 slots with local no-reads, global no-read, and the
  multiple read message.

For each device, the test checks that the published (kind, value, gate) readings equal what the
simulator wrote, that seq runs 1..n, and that every reject the simulator caused was counted with
its reason. It also checks that heartbeats and command answers are never published.
"""

from __future__ import annotations

import importlib
import json
import re
import time
import tomllib
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from drivers import driver_class
from edge_agent.config import parse_config
from edge_agent.errors import DeviceError
from simulators import DemoSimulator
from simulators.cognex_dataman import DataManSim, DataManSimConfig
from simulators.datalogic import DatalogicSim, DatalogicSimConfig
from simulators.mosquitto import Mosquitto, free_port
from simulators.pty_port import PtyPort
from simulators.sick_clv import ClvSim, ClvSimConfig
from simulators.tunnel.engine import TunnelSim
from simulators.tunnel.runner import DemoTunnel
from simulators.tunnel.tcp_port import TcpPort
from tests.harness import ROOT, Agent, Subscriber, agent_config, queue_rows, schema_validator

BASE_FAULTS = {"fragment": 0.3, "coalesce": 0.15, "noise": 0.05, "garble": 0.04,
               "partial": 0.04, "noread": 0.05, "late": 0.05, "duplicate": 0.05}  # fmt: skip


def simulators(tmp_path: Path) -> dict[str, TunnelSim]:
    sick_tcp = ClvSim(TcpPort(), ClvSimConfig(
        rate=60, seed=21, scanner_no=1, header_fields=("gate", "count"), max_codes=2,
        faults={**BASE_FAULTS, "double_stx": 0.03, "disconnect": 0.015}))  # fmt: skip
    sick_pty = ClvSim(PtyPort(tmp_path / "sick-pty"), ClvSimConfig(
        rate=60, seed=22, scanner_no=2, header_fields=("gate",), max_codes=1, heartbeat_s=0.2,
        stall_s=1.8, faults={**BASE_FAULTS, "stall": 0.015}))  # fmt: skip
    cognex = DataManSim(TcpPort(), DataManSimConfig(
        seed=23, scanner_no=3, trigger="command", extended=True, checksum=True, index_field=True,
        inter_byte_s=0.25, faults=BASE_FAULTS))  # fmt: skip
    datalogic = DatalogicSim(PtyPort(tmp_path / "datalogic"), DatalogicSimConfig(
        rate=60, seed=24, scanner_no=4, slots=2, multiread_text="MULTI",
        faults={**BASE_FAULTS, "local_noread": 0.08, "multiread": 0.03}))  # fmt: skip
    sims = {"sick_tcp": sick_tcp, "sick_pty": sick_pty, "cognex": cognex, "datalogic": datalogic}
    for sim in sims.values():
        sim.port.plug()
    return sims


def devices(sims: dict[str, TunnelSim]) -> dict[str, dict[str, Any]]:
    # Inter-byte timeouts: the simulators fragment telegrams with 1-20 ms gaps, but on this
    # shared 2-core box a thread can be descheduled for 300 ms, and a telegram cut by the
    # inter-byte timeout is a (correct) partial reject that the truth does not predict. So the
    # STX protocols (whose partial frames end at the next STX) get 1 s. The DataMan line
    # protocol needs silence to end a cut line: the simulator waits 0.75 s, the driver 0.5 s.
    return {
        "sick_tcp": {"type": "sick_clv", "port": sims["sick_tcp"].port.url,
                     "header_fields": ["gate", "count"], "inter_byte_timeout_ms": 1000},
        "sick_pty": {"type": "sick_clv", "port": sims["sick_pty"].port.url,
                     "header_fields": ["gate"], "heartbeat_timeout_s": 0.8,
                     "inter_byte_timeout_ms": 1000},
        "cognex": {"type": "cognex_dataman", "port": sims["cognex"].port.url,
                   "index_field": True, "trigger_period_ms": 40, "command_checksum": True,
                   "inter_byte_timeout_ms": 500},
        "datalogic": {"type": "datalogic", "port": sims["datalogic"].port.url,
                      "multiread_text": "MULTI", "inter_byte_timeout_ms": 1000},
    }  # fmt: skip


def received(backend: Subscriber, device: str) -> list[dict[str, Any]]:
    return [r for _, r in backend.readings() if r["device"] == device]


def published(backend: Subscriber, device: str) -> Counter[tuple[str, str | None, int | None]]:
    return Counter((r["kind"], r["value"], r.get("gate")) for r in received(backend, device))


def test_every_tunnel_reading_arrives_with_values_and_gates(
    tmp_path: Path, broker: Mosquitto, backend: Subscriber,
    agent_factory: Callable[[Path], Agent],
) -> None:  # fmt: skip
    sims = simulators(tmp_path)
    agent = agent_factory(agent_config(tmp_path, broker.port, devices(sims)))
    agent.start()
    try:
        for dev in ("sick_tcp", "sick_pty", "datalogic"):
            sims[dev].start(count=150)
        sims["cognex"].start()  # answers the driver's triggers until stopped
        for dev in ("sick_tcp", "sick_pty", "datalogic"):
            sims[dev].wait(60)
        sims["cognex"].stop()
        for dev, sim in sims.items():
            want = len(sim.readings())

            def arrived(d: str = dev, w: int = want) -> bool:
                return len(received(backend, d)) >= w

            assert backend.wait_for(arrived, 20), (dev, len(received(backend, dev)), want)
        time.sleep(0.5)  # anything extra (a duplicate that slipped through) would arrive now
    finally:
        for sim in sims.values():
            sim.stop()
        agent.stop()
        for sim in sims.values():
            sim.port.close()

    events = agent.events()
    rejects = Counter((e["device"], e["reason"]) for e in events if e["event"] == "frame_rejected")
    for dev, sim in sims.items():
        got = received(backend, dev)
        assert published(backend, dev) == Counter(sim.readings()), dev
        assert [r["seq"] for r in got] == list(range(1, len(got) + 1)), dev
        assert {(dev, reason): n for reason, n in sim.rejects().items()} == {
            k: n for k, n in rejects.items() if k[0] == dev
        }, dev
        for r in got:
            assert r["kind"] in ("barcode", "noread")  # never heartbeats or command answers
            if r["value"] is not None:
                assert r["value"].encode() in bytes.fromhex(r["raw"])

    # the faults really happened, and the gates really are gate counters / trigger indexes
    truth = {dev: Counter(t.kind for t in sim.truth) for dev, sim in sims.items()}
    assert truth["sick_tcp"]["cut"] >= 1 and truth["sick_pty"]["stall"] >= 1, truth
    assert truth["cognex"]["answer"] >= 50, truth
    cognex_gates = [r["gate"] for r in received(backend, "cognex")]
    assert len(set(cognex_gates)) >= 50 and max(cognex_gates) <= len(sims["cognex"].truth)
    assert all("gate" not in r for r in received(backend, "datalogic"))
    assert sum(rejects[(d, "duplicate")] for d in ("sick_tcp", "cognex")) >= 3
    assert rejects[("cognex", "checksum")] >= 1 and rejects[("sick_tcp", "count_mismatch")] >= 1
    lost = [e for e in events if e["event"] == "device_state" and e["device"] == "sick_pty"
            and "heartbeat lost" in e.get("reason", "")]  # fmt: skip
    assert lost, "the pty reader's stall was not detected by the heartbeat watchdog"

    validators = schema_validator()
    for topic, payload, _ in backend.messages:
        if "/reading/" in topic:
            validators["reading.v1.json"].validate(json.loads(payload))
        elif topic.endswith("/batch"):
            validators["batch.v1.json"].validate(json.loads(payload))
    rows = queue_rows(tmp_path / "state" / "queue.db")
    assert {r["id"] for r in rows} <= {r["id"] for _, r in backend.readings()}


def test_example_device_tables_are_valid_and_their_demo_simulators_serve(tmp_path: Path) -> None:
    text = (ROOT / "config" / "devices" / "tunnel_scanners.toml").read_text()
    # the demo's fixed ports may be taken on a shared machine: move them to free ones
    text = re.sub(
        r"socket://127\.0\.0\.1:\d+\b", lambda _: f"socket://127.0.0.1:{free_port()}", text
    )
    text = text.replace("/tmp/edge-agent-demo/", f"{tmp_path}/")
    cfg = parse_config(tomllib.loads(text), tmp_path / "line.toml")  # a complete config
    assert {d.type for d in cfg.devices.values()} == {"sick_clv", "cognex_dataman", "datalogic"}
    for seed, (dev_id, dev) in enumerate(cfg.devices.items(), start=1):
        demo: DemoTunnel = importlib.import_module(f"simulators.{dev.type}").for_demo(
            dev_id, dev, 100.0, seed
        )
        conforms: DemoSimulator = demo  # what edge-agent demo needs (checked by mypy)
        assert str(getattr(dev, "port", "?")) in conforms.describe()
        drv = driver_class(dev.type)(dev_id, dev)
        demo.start()
        deadline = time.monotonic() + 5
        got: list[tuple[str, object, object]] = []
        is_open = False
        while len(got) < 20 and time.monotonic() < deadline:
            try:
                if not is_open:
                    drv.open()
                    is_open = True
                d = drv.read(0.1)
            except DeviceError:  # a demo fault (disconnect, stall): reopen, as the supervisor does
                drv.close()
                is_open = False
                continue
            if d is not None:
                got.append((d.kind.value, d.value, d.gate))
        demo.stop()
        drv.close()
        assert len(got) >= 20 and demo.expected() >= len(got), (dev_id, len(got))
        assert not Counter(got) - Counter(demo.sim.readings()), dev_id
