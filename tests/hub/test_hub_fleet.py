"""The fleet view, KPIs in SQL, births (status.v1 and the old plain text), rejects, metrics
and the hub's configuration errors."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from simulators.mosquitto import Mosquitto, free_port
from simulators.postgres import Postgres
from tests.hub.conftest import HubProc, hub_config, query, wait_until
from tests.hub.publish import now_ts, publish, reading, uuid7

ROOT = Path(__file__).resolve().parents[2]


def parcel(agent: str, station: str, seq: int, flags: list[str], waybill: str | None) -> Any:
    return {
        "schema": "edge-agent/parcel/v1",
        "id": uuid7(),
        "seq": seq,
        "agent": agent,
        "site": "T1",
        "line": "L1",
        "station": station,
        "ts": now_ts(),
        "parcel": uuid7(),
        "correlation": "gate",
        "waybill": waybill,
        "carrier": "sf" if waybill else None,
        "codes": [],
        "weight_g": 1200.0,
        "devices": ["scan_1"],
        "readings": [uuid7()],
        "counts": {"reads": 1, "repeats": 0, "noreads": 0, "weights": 1},
        "timing": {"opened_mono_ns": 1, "window_end_mono_ns": 2, "last_reading_ms": 1},
        "flags": flags,
        "mono_ns": 2,
    }


def station_msgs(agent: str, station: str, n: int, noread: int, no_weight: int) -> list[Any]:
    out = []
    for s in range(1, n + 1):
        flags = ["noread"] if s <= noread else ["no_weight"] if s <= noread + no_weight else []
        p = parcel(agent, station, s, flags, None if "noread" in flags else f"SF{s:013d}")
        out.append((f"edge/v1/T1/L1/{agent}/parcel/{station}", p, False))
    return out


def cli(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_agent", "hub", *args, "-c", str(cfg)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )


def test_fleet_view_kpis_births_rejects_and_metrics(
    tmp_path: Path,
    broker: Mosquitto,
    postgres: Postgres,
    hub_factory: Callable[[Path], HubProc],
) -> None:
    port = free_port()
    cfg = hub_config(
        tmp_path,
        "h1",
        [broker.port],
        postgres.dsn,
        "",
        "",
        metrics=f"enabled = true\nport = {port}",
    )
    hub = hub_factory(cfg)
    hub.start()
    status = {
        "schema": "edge-agent/status/v1",
        "state": "online",
        "agent": "a1",
        "site": "T1",
        "line": "L1",
        "version": "0.2.0",
        "config_digest": "sha256:" + "ab" * 32,
        "boot_id": "b1",
        "started_at": now_ts(),
        "ts": now_ts(),
        "queue_depth": 7,
        "oldest_unsent_s": 1.5,
        "devices": [{"id": "scan_1", "type": "serial_line_scanner", "state": "connected"}],
    }
    msgs: list[Any] = [
        ("edge/v1/T1/L1/a1/status", status, True),
        ("edge/v1/T1/L1/a2/status", b"offline", True),
        (
            "edge/v1/T1/L1/a2/device/scale_1/state",
            {"device": "scale_1", "state": "reconnecting", "reason": "unplugged", "ts": 1.0},
            True,
        ),
        (
            "edge/v1/T1/L1/a2/alarm",
            {"schema": "edge-agent/alarm/v1", "alarm": "queue_full", "ts": 1.0},
            False,
        ),
        ("edge/v1/T1/L1/a1/reading/scan_1", b"{not json", False),
        ("edge/v1/T1/L1/a1/reading/scan_1", reading("a1", "scan_1", 1, ts="yesterday"), False),
        ("edge/v1/T1/L1/a1/reading/scan_1", reading("a1", "scan_1", 0), False),
    ]
    msgs += station_msgs("a1", "st1", 1000, noread=2, no_weight=0)  # 0.2 %: at the target
    msgs += station_msgs("a2", "st2", 500, noread=1, no_weight=3)  # 0.2 %, 0.8 % > 0.5 %
    publish(broker.port, msgs)
    dsn = postgres.dsn
    assert wait_until(lambda: query(dsn, "SELECT count(*) FROM parcels")[0][0] == 1500, 20)
    assert wait_until(lambda: query(dsn, "SELECT count(*) FROM rejects")[0][0] == 3, 10)
    reasons = sorted(r[0] for r in query(dsn, "SELECT reason FROM rejects"))
    assert reasons == ["bad_json", "bad_ts", "reading_bad_seq"]
    r = cli(cfg, "status", "--json")
    assert r.returncode == 0, r.stderr
    view = json.loads(r.stdout)
    agents = {a["agent"]: a for a in view["agents"]}
    a1, a2 = agents["a1"], agents["a2"]
    assert (a1["state"], a1["version"], a1["queue_depth"]) == ("online", "0.2.0", 7)
    assert a1["config_digest"] == "sha256:" + "ab" * 32
    assert a1["attention"] == []
    assert a2["state"] == "offline" and a2["version"] is None  # plain text: state only
    assert a2["devices_offline"] == ["scale_1"] and a2["open_alarms"] == 1
    assert set(a2["attention"]) == {"offline", "devices_offline", "kpi", "alarms"}
    st = {s["station"]: s for s in view["stations"]}
    assert (st["st1"]["parcels"], st["st1"]["noread_pct"], st["st1"]["above"]) == (1000, 0.2, [])
    assert st["st2"]["reconciliation_pct"] == 0.8 and st["st2"]["above"] == ["reconciliation_pct"]
    human = cli(cfg, "status").stdout
    assert any(line.startswith("! a2") for line in human.splitlines()), human
    assert any(line.startswith("  a1") for line in human.splitlines()), human
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert "edge_agent_hub_parcels_total 1500.0" in text
    assert "edge_agent_hub_rejects_total 3.0" in text
    assert "edge_agent_hub_batch_commit_seconds_count" in text


def test_hub_config_errors_all_at_once(tmp_path: Path) -> None:
    cfg = tmp_path / "hub.toml"
    cfg.write_text(
        '[hub]\nbatch_max = 0\n[mqtt]\nbrokers = [{ host = "h:1883" }]\npassword = "x"\n'
        '[database]\ndsn = "host=h password=hunter2"\ndns = 1\n'
    )
    r = cli(cfg, "status")
    assert r.returncode == 78, r.stderr
    err = r.stderr
    assert "[hub] missing required key 'instance'" in err
    assert "[hub] batch_max = 0: expected greater than or equal to 1" in err
    assert "[mqtt] password: secrets are not accepted in the TOML file" in err
    assert "[database] unknown key 'dns': did you mean 'dsn'?" in err
    assert "[database] dsn: contains a password (not shown)" in err and "hunter2" not in err
    assert "[mqtt.brokers.0] host" in err
