"""End to end with real parts: pymodbus indicators -> pty / TCP -> `edge-agent run` -> Mosquitto.

One Modbus RTU bus with two unit ids on a pty (int32 kg, 3 decimals, status bits; 5 % of the
responses CRC-corrupted) and one Modbus TCP indicator (float32 CDAB, TUNA-style status bits;
occasional exception responses, one TCP reset mid-run). Every weight that settled on every
platform must reach the backend exactly once per parcel, with the right grams; every row the
agent committed must arrive; the queue must pass integrity_check.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from drivers.modbus_scale import RegisterMap
from simulators.modbus_scale import ScaleSim, ScaleSimConfig
from simulators.mosquitto import Mosquitto
from tests.harness import Agent, Subscriber, agent_config, queue_rows, schema_validator

PARCELS = 5
#: TUNA ID551PN-like status word: bit 8 centre of zero, 10 over capacity, 12 motion.
TUNA = RegisterMap(
    weight_register=2, weight_type="float32", word_order="little", unit="kg",
    status_register=4, zero_bit=8, overload_bit=10, motion_bit=12,
)  # fmt: skip


@pytest.fixture
def scales(tmp_path: Path) -> Iterator[dict[str, ScaleSim]]:
    """The RTU bus (units 1, 2) and the TCP indicator (unit 1), empty until run_auto()."""
    rtu = ScaleSimConfig(
        transport="rtu", link=tmp_path / "scale-bus-1", units=(1, 2), auto=False, rate=1.0,
        parcels=PARCELS, seed=11, faults={"crc": 0.05},
    )  # fmt: skip
    tcp = ScaleSimConfig(
        transport="tcp", units=(1,), registers=TUNA, auto=False, rate=1.0, parcels=PARCELS,
        seed=12, faults={"exception": 0.03},
    )  # fmt: skip
    sims = {"bus_1": ScaleSim(rtu).start(), "tcp_1": ScaleSim(tcp).start()}
    yield sims
    for s in sims.values():
        s.stop()


def device_tables(sims: dict[str, ScaleSim]) -> dict[str, dict[str, Any]]:
    rtu, tcp = sims["bus_1"], sims["tcp_1"]
    common = {"type": "modbus_scale", "poll_ms": 100, "timeout_ms": 300}
    return {
        "bus_1": common | {"port": rtu.url, "parity": "N", "units": [1, 2],
                           "registers": rtu.cfg.registers.model_dump(exclude_none=True)},
        "tcp_1": common | {"transport": "tcp", "host": "127.0.0.1", "tcp_port": tcp.server.port,
                           "units": [1], "registers": TUNA.model_dump(exclude_none=True)},
    }  # fmt: skip


def write_config(tmp: Path, port: int, devices: dict[str, dict[str, Any]]) -> Path:
    """agent_config() for the flat keys, then each ``[devices.<id>.registers]`` table."""
    flat = {d: {k: v for k, v in t.items() if k != "registers"} for d, t in devices.items()}
    path = agent_config(tmp, port, flat)
    with path.open("a") as f:
        for dev, table in devices.items():
            f.write(f"[devices.{dev}.registers]\n")
            f.writelines(f"{k} = {json.dumps(v)}\n" for k, v in table["registers"].items())
    return path


def weighed(sims: dict[str, ScaleSim]) -> bool:
    """Every platform had all its parcels and the last stable window ended 1 s ago."""
    done = all(len(s.settled(u)) == PARCELS for s in sims.values() for u in s.units)
    ends = [t.end for s in sims.values() for t in s.truth if t.kind == "settled"]
    return done and time.monotonic() > max(ends) + 1.0


def published(backend: Subscriber) -> dict[tuple[str, int], list[float]]:
    """Weights per (device, unit id); ``channel`` must agree with the unit byte of the frame."""
    out: dict[tuple[str, int], list[float]] = {}
    for _, r in backend.readings():
        raw = bytes.fromhex(r["raw"])
        assert r["channel"] == (raw[6] if r["check"] == "tcp" else raw[0])
        out.setdefault((r["device"], r["channel"]), []).append(r["value"])
    return out


def test_every_settled_weight_arrives_with_its_grams(
    tmp_path: Path, broker: Mosquitto, backend: Subscriber, scales: dict[str, ScaleSim],
    agent_factory: Callable[[Path], Agent],
) -> None:  # fmt: skip
    agent = agent_factory(write_config(tmp_path, broker.port, device_tables(scales)))
    agent.start()
    assert agent.wait_log("link_opened", 5), agent.log_text()
    for sim in scales.values():
        sim.run_auto()
    time.sleep(4)
    scales["tcp_1"].reset_connections()
    deadline = time.monotonic() + 40
    while not weighed(scales) and time.monotonic() < deadline:
        time.sleep(0.2)
    want = {(d, u): s.settled(u) for d, s in scales.items() for u in s.units}
    total = sum(map(len, want.values()))
    assert backend.wait_for(lambda: len(backend.readings()) >= total, 10), (
        published(backend),
        want,
    )
    time.sleep(0.5)  # nothing more may come
    assert published(backend) == want
    assert total == 3 * PARCELS
    for _, r in backend.readings():
        assert (r["kind"], r["unit"], r["stable"]) == ("weight", "g", True)
        assert r["check"] == ("tcp" if r["device"] == "tcp_1" else "crc16") and "gate" not in r
    agent.stop()
    _oracle(backend, tmp_path / "state" / "queue.db")
    events = agent.events()
    opened = [e for e in events if e["event"] == "link_opened" and e["device"] == "tcp_1"]
    assert len(opened) >= 2, "the TCP reset did not make the driver reconnect"
    rejects = {e["reason"] for e in events if e["event"] == "frame_rejected"}
    assert "crc" in rejects, rejects  # counted, and no reading came from a bad frame


def _oracle(backend: Subscriber, db: Path) -> None:
    """Every committed row arrived, each (device, seq) under one id, payloads valid."""
    rows = queue_rows(db)
    got = backend.readings()
    ids = {r["id"] for _, r in got}
    assert not [r for r in rows if r["id"] not in ids], "committed readings never arrived"
    seqs: dict[tuple[str, int], set[str]] = {}
    for _, r in got:
        seqs.setdefault((r["device"], r["seq"]), set()).add(r["id"])
    assert all(len(v) == 1 for v in seqs.values())
    validator = schema_validator()["reading.v1.json"]
    for _, r in got:
        validator.validate(r)
