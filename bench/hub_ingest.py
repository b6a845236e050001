"""Hub ingest benchmark: readings/s into PostgreSQL with deduplication, 1 and 2 hub instances,
against a naive consumer (automatic PUBACK, one INSERT transaction per message), same run.

    .venv/bin/python -m bench.hub_ingest                  # 60,000 readings, both shapes
    .venv/bin/python -m bench.hub_ingest --readings 200000 --json out.json

Each case: a fresh ``readings`` table; the consumers' persistent sessions are created, the
consumers stop, the broker is loaded with every message (10 % of the readings sent twice, as a
reconnecting agent does; Mosquitto saves its database every 10 s here, not per message), then
the consumers start; the clock runs from the first consumer's CONNACK until every distinct
reading is in PostgreSQL. Shapes: ``single`` (one reading.v1 per
message, live traffic) and ``batch`` (batch.v1 of 100 readings, an agent draining its
backlog). PostgreSQL runs with its defaults for durability (fsync and synchronous_commit
on), on a private server in a temp dir.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_agent.hub import db
from simulators.mosquitto import Mosquitto
from simulators.postgres import Postgres

ROOT = Path(__file__).resolve().parent.parent
AGENTS, DEVICES = 50, 4


def make_messages(n: int, shape: str, dup: float = 0.1) -> list[tuple[str, bytes]]:
    """``n`` distinct readings over 50 agents x 4 devices, plus ``dup`` of them again."""
    seqs: dict[tuple[int, int], int] = {}
    readings: list[dict[str, Any]] = []
    for i in range(n):
        a, d = i % AGENTS, (i // AGENTS) % DEVICES
        seq = seqs[(a, d)] = seqs.get((a, d), 0) + 1
        u = f"{random.getrandbits(128):032x}"
        readings.append(
            {"schema": "edge-agent/reading/v1", "id": f"{u[:8]}-{u[8:12]}-7{u[13:16]}-8{u[17:20]}-"
             f"{u[20:]}", "agent": f"a{a:02d}", "site": "S1", "line": f"L{a:02d}",
             "device": f"d{d}", "seq": seq, "kind": "barcode", "value": f"SF{i:013d}",
             "ts": "2026-12-05T12:00:00.000000Z", "mono_ns": i, "boot_id": "b", "raw": "00"}
        )  # fmt: skip
    readings += random.Random(1).sample(readings, int(n * dup))
    base = "edge/v1/S1/L{a}/a{a}"
    out: list[tuple[str, bytes]] = []
    if shape == "single":
        for r in readings:
            a = r["agent"][1:]
            out.append((f"{base.format(a=a)}/reading/{r['device']}", json.dumps(r).encode()))
    else:
        by_agent: dict[str, list[dict[str, Any]]] = {}
        for r in readings:
            by_agent.setdefault(r["agent"][1:], []).append(r)
        for ag, rs in by_agent.items():
            for k in range(0, len(rs), 100):
                chunk = rs[k : k + 100]
                doc = {"schema": "edge-agent/batch/v1", "count": len(chunk), "readings": chunk}
                out.append((f"{base.format(a=ag)}/batch", json.dumps(doc).encode()))
    return out


def load(port: int, msgs: list[tuple[str, bytes]]) -> None:
    """Publish every message at QoS 1 from 4 connections and wait for the PUBACKs."""

    def one(part: list[tuple[str, bytes]], k: int) -> None:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"loader-{k}", protocol=mqtt.MQTTv5)
        c.max_inflight_messages_set(1000)
        c.max_queued_messages_set(0)
        c.connect("127.0.0.1", port)
        c.loop_start()
        infos = [c.publish(t, p, qos=1) for t, p in part]
        for i in infos:
            i.wait_for_publish(120)
        c.disconnect()
        c.loop_stop()

    threads = [threading.Thread(target=one, args=(msgs[k::4], k)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def hub_toml(tmp: Path, name: str, port: int, dsn: str) -> Path:
    p = tmp / f"{name}.toml"
    p.write_text(
        f'[hub]\ninstance = "{name}"\n[mqtt]\nbrokers = [{{ host = "127.0.0.1", port = {port} }}]\n'
        f'[database]\ndsn = "{dsn}"\n[log]\nlevel = "info"\nformat = "json"\n'
    )
    return p


def hubs(tmp: Path, n: int, port: int, dsn: str) -> list[subprocess.Popen[bytes]]:
    procs = []
    for i in range(n):
        cfg = hub_toml(tmp, f"bh{i}", port, dsn)
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "edge_agent", "hub", "run", "-c", str(cfg)],
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=(tmp / f"bh{i}.log").open("ab"),
            )
        )
    return procs


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait(30)


def connected_at(logs: list[Path], timeout: float = 60) -> float:
    """Wall time the first consumer got its CONNACK (the hub's ``hub_connected`` log line)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        times = []
        for log in logs:
            for line in log.read_text().splitlines() if log.exists() else []:
                if '"hub_connected"' in line:
                    ts = json.loads(line)["timestamp"].replace("Z", "+00:00")
                    times.append(dt.datetime.fromisoformat(ts).timestamp())
        if times:
            return min(times)
        time.sleep(0.02)
    msg = "no hub connected"
    raise TimeoutError(msg)


def count(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as c:
        row = c.execute("SELECT count(*) FROM readings").fetchone()
        return int(row[0]) if row else 0


CONNECTED: list[float] = []


def naive(port: int, dsn: str, stop_ev: threading.Event, ready: threading.Event) -> None:
    """Automatic PUBACK, one transaction per message, one INSERT per reading."""
    conn = psycopg.connect(dsn, autocommit=True)
    sql = (
        "INSERT INTO readings (id, agent, site, line, device, seq, kind, value, ts, payload)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING"
    )

    def on_message(_c: Any, _u: Any, m: mqtt.MQTTMessage) -> None:
        doc = json.loads(m.payload)
        rs = doc.get("readings", [doc])
        with conn.transaction():
            for r in rs:
                row = [r[k] for k in ("id", "agent", "site", "line", "device", "seq", "kind")]
                conn.execute(sql, (*row, r["value"], r["ts"], json.dumps(r)))

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="naive", protocol=mqtt.MQTTv5)
    c.on_message = on_message

    def on_connect(cl: mqtt.Client, *_: Any) -> None:
        CONNECTED.append(time.time())
        cl.subscribe("edge/v1/+/+/+/#", qos=1)
        ready.set()

    c.on_connect = on_connect
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    c.connect("127.0.0.1", port, clean_start=False, properties=props)
    c.loop_start()
    stop_ev.wait()
    c.disconnect()
    c.loop_stop()
    conn.close()


def case(tmp: Path, pg: Postgres, shape: str, consumer: str, n: int) -> dict[str, Any]:
    # Persistence every 10 s, not on every change: with autosave_on_changes Mosquitto rewrites
    # its whole database per message, which at 60,000 queued messages measures Mosquitto.
    broker = Mosquitto(
        tmp / f"broker-{shape}-{consumer}",
        extra="autosave_on_changes false\nautosave_interval 10\n",
    )
    broker.start()
    dsn = pg.dsn
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("TRUNCATE readings, streams, gaps, agents, rejects")
    msgs = make_messages(n, shape)
    ev, ready = threading.Event(), threading.Event()
    if consumer == "naive":  # create the session, then leave
        t = threading.Thread(target=naive, args=(broker.port, dsn, ev, ready))
        t.start()
        ready.wait(10)
        time.sleep(0.3)
        ev.set()
        t.join()
    else:
        k = int(consumer[0])
        procs = hubs(tmp, k, broker.port, dsn)
        time.sleep(3)
        stop(procs)
    load(broker.port, msgs)
    ev = threading.Event()
    CONNECTED.clear()
    logs = [tmp / f"bh{i}.log" for i in range(2)]
    for log in logs:
        log.unlink(missing_ok=True)
    if consumer == "naive":
        t = threading.Thread(target=naive, args=(broker.port, dsn, ev, threading.Event()))
        t.start()
    else:
        procs = hubs(tmp, int(consumer[0]), broker.port, dsn)
    deadline = time.monotonic() + 600
    while count(dsn) < n and time.monotonic() < deadline:
        time.sleep(0.02)
    end = time.time()
    # The clock runs from the first consumer's CONNACK (process start-up is not ingest).
    t0 = CONNECTED[0] if consumer == "naive" else connected_at(logs)
    elapsed = end - t0
    got = count(dsn)
    if consumer == "naive":
        ev.set()
        t.join()
    else:
        stop(procs)
    broker.stop()
    return {
        "shape": shape,
        "consumer": consumer,
        "readings": n,
        "messages": len(msgs),
        "in_db": got,
        "seconds": round(elapsed, 2),
        "readings_per_s": round(got / elapsed),
        "loadavg_1m": round(os.getloadavg()[0], 2),  # other work on the machine, for context
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.hub_ingest", description=__doc__)
    ap.add_argument("--readings", type=int, default=60_000)
    ap.add_argument("--shapes", default="batch,single")
    ap.add_argument("--consumers", default="naive,1hub,2hub")
    ap.add_argument("--json", type=Path, help="write the results here too")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up servers on kill
    tmp = Path(tempfile.mkdtemp(prefix="hub-bench-"))
    pg = Postgres(tmp / "pg", durable=True)
    pg.start()
    try:
        with db.connect(pg.dsn) as conn:
            db.migrate(conn)
        results = []
        for shape in args.shapes.split(","):
            for consumer in args.consumers.split(","):
                n = args.readings if consumer != "naive" or shape == "batch" else args.readings // 4
                r = case(tmp, pg, shape, consumer, n)
                results.append(r)
                print(
                    f"{shape:<7} {consumer:<6} {r['readings']:>8} readings {r['messages']:>7} msgs"
                    f"  {r['seconds']:>7.2f} s  {r['readings_per_s']:>7} readings/s"
                    f"  (in db {r['in_db']}, load {r['loadavg_1m']})",
                    flush=True,
                )
        if args.json:
            args.json.write_text(json.dumps({"cpus": os.cpu_count(), "results": results}, indent=1))
    finally:
        pg.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
