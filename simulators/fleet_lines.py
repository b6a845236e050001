"""Station truth at the backend: simulated lines -> real device simulators -> N agents ->
Mosquitto -> 2 hubs -> PostgreSQL, checked parcel by parcel against the injected truth.

Not a device simulator (entry point ``cli``). ``python -m simulators.fleet_lines --agents 4
--seconds 120`` starts, in a fresh temporary directory, PostgreSQL and Mosquitto on free ports,
two ``edge-agent hub run`` instances and N ``edge-agent run`` processes. Each agent reads one
line (``simulators.line`` at ``--rate`` parcels/h with its faults) through the real device
simulators of :mod:`simulators.line.devices`: two SICK tunnel heads (pty and TCP, gate
numbers) and a Toledo indicator (pty). The simulators and their pacing run in child processes
(:mod:`simulators.line.procs`, ``--lines-per-proc`` lines each, 5 by default), so that a
fleet's lines do not share one GIL; every line starts after a common warm-up, the first
parcels staggered over one parcel period. At 1/3 of the run hub-1 is killed with -9 (restarted
2 s later), at 2/3 the broker restarts. Then it waits until every parcel and reading is in
PostgreSQL and no gap is open, and prints, per line, the truth check
(:func:`simulators.line.backend.compare`, :func:`~simulators.line.backend.kpis`) and the
figures: readings written by the devices = distinct readings in PostgreSQL, duplicates the hubs
absorbed, open gaps, the agents' reconnect spread after the broker restart, device -> database
latency p50/p99, hub ingest rate, RSS and CPU per agent. Exit code 0 only if everything matches.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from edge_agent.hub.config import load_hub_config
from edge_agent.hub.fleet import fleet
from simulators.fleet import fleet_dir, spawn, usage
from simulators.fleet import hub_toml as fleet_hub_toml
from simulators.line import LineConfig, LineSim
from simulators.line.backend import compare, kpis
from simulators.line.procs import LineProcs, Written
from simulators.mosquitto import Mosquitto, free_port
from simulators.postgres import Postgres


@dataclass
class Line:
    """One agent and its line."""

    name: str
    sim: LineSim
    #: The child process serving this line's device simulators (and maybe others').
    sims: LineProcs
    toml: str = ""
    proc: subprocess.Popen[bytes] | None = None
    log: Path = Path()
    cpu0: float = 0.0
    usage: tuple[float, float] = (0.0, 0.0)
    problems: list[str] = field(default_factory=list)
    #: Per device, ``(wall time, kind, value)`` per reading written (from the child).
    written: Written = field(default_factory=dict)
    #: Every reading of the line by id (from the child).
    by_id: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: How late (ms) each reading reached its device simulator (``drive``'s ``slips``).
    slips: list[float] = field(default_factory=list)


def agent_toml(d: Path, line: Line, port: int) -> Path:
    site, ln, name = line.sim.cfg.node
    path = d / "agent.toml"
    path.write_text(
        f'[node]\nsite = "{site}"\nline = "{ln}"\nagent_id = "{name}"\n'
        f'[mqtt]\nbrokers = [{{ host = "127.0.0.1", port = {port} }}]\nreconnect_max_s = 1\n'
        f'[queue]\npath = "{d / "queue.db"}"\n[log]\nformat = "json"\nlevel = "info"\n'
        f'[control]\nsocket = "{d / "ctl.sock"}"\n' + line.toml
    )
    return path


def hub_toml(d: Path, name: str, port: int, dsn: str, metrics: int) -> Path:
    """:func:`simulators.fleet.hub_toml` with quick gap chasing and the metrics endpoint."""
    hub = "gap_grace_s = 1\nresend_retry_s = 3\ngap_scan_s = 0.5\n"
    sections = f"[metrics]\nenabled = true\nport = {metrics}\n"
    return fleet_hub_toml(d, name, port, dsn, hub, sections=sections, level="info")


def scrape(port: int) -> dict[str, float]:
    """The hub's counters from its metrics endpoint ({} when it does not answer)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return {}
    return {
        k: float(v)
        for k, _, v in (x.partition(" ") for x in text.splitlines() if x.startswith("edge_agent"))
    }


def absorbed(counters: dict[str, float]) -> float:
    """Readings a hub received that were already in the database."""
    got = counters.get("edge_agent_hub_readings_total", 0.0)
    return got - counters.get("edge_agent_hub_readings_new_total", 0.0)


def reconnect_after(log: Path, t0: float) -> float | None:
    """Seconds from ``t0`` (wall) to the agent's first ``mqtt_connected`` after it."""
    for x in log.read_text().splitlines():
        if x.startswith("{") and '"mqtt_connected"' in x:
            t = dt.datetime.fromisoformat(json.loads(x)["timestamp"]).timestamp()
            if t > t0:
                return t - t0
    return None


def devices_up(ln: Line, timeout: float) -> bool:
    """Wait until the agent logged every device of its line ``connected``."""
    want = set(ln.sim.cfg.devices())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        up = {
            e["device"]
            for e in map(json.loads, filter(None, ln.log.read_text().splitlines()))
            if e.get("event") == "device_state" and e.get("state") == "connected"
        }
        if want <= up:
            return True
        time.sleep(0.2)
    return False


def pct(xs: list[float], q: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def one(conn: psycopg.Connection[Any], sql: str, params: Any = None) -> tuple[Any, ...]:
    """The single row of ``sql``."""
    row = conn.execute(sql, params).fetchone()
    assert row is not None
    return tuple(row)


def settled(conn: psycopg.Connection[Any], lines: list[Line]) -> bool:
    """Every written reading and every parcel in PostgreSQL, no gap open."""
    for ln in lines:
        agent = ln.sim.cfg.node[2]
        (n_r,) = one(conn, "SELECT count(*) FROM readings WHERE agent = %s", (agent,))
        (n_p,) = one(conn, "SELECT count(*) FROM parcels WHERE agent = %s", (agent,))
        if n_r < sum(len(w) for w in ln.written.values()) or n_p < len(ln.sim.truth):
            return False
    return int(one(conn, "SELECT count(*) FROM gaps WHERE state = 'open'")[0]) == 0


def figures(conn: psycopg.Connection[Any], lines: list[Line]) -> dict[str, Any]:
    """Latency device -> database (received_at), ingest rate, counts."""
    lat: list[float] = []
    for ln in lines:
        rows = conn.execute(
            "SELECT device, seq, extract(epoch FROM received_at) FROM readings WHERE agent = %s",
            (ln.sim.cfg.node[2],),
        ).fetchall()
        at = {(d, s): float(t) for d, s, t in rows}
        for dev, written in ln.written.items():
            lat += [at[(dev, n)] - w[0] for n, w in enumerate(written, 1) if (dev, n) in at]
    first, last, n = one(
        conn,
        "SELECT extract(epoch FROM min(received_at)), extract(epoch FROM max(received_at)),"
        " count(*) FROM readings",
    )
    peak = one(
        conn,
        "SELECT coalesce(max(c), 0) FROM (SELECT count(*) AS c FROM readings"
        " GROUP BY date_trunc('second', received_at)) s",
    )[0]
    span = float(last - first) if n else 0.0
    return {
        "readings_in_db": n,
        "latency_ms_p50": round(1000 * pct(lat, 0.5), 1),
        "latency_ms_p99": round(1000 * pct(lat, 0.99), 1),
        "ingest_per_s_mean": round(n / span, 1) if span else 0.0,
        "ingest_per_s_peak_1s": int(peak),
        "open_gaps": one(conn, "SELECT count(*) FROM gaps WHERE state = 'open'")[0],
    }


def run(args: argparse.Namespace, d: Path) -> dict[str, Any]:
    """The whole run; returns the report (``ok``: everything matched)."""
    pg, broker = Postgres(d / "pg"), Mosquitto(d / "broker")
    pg.start()
    broker.start()
    mports = [free_port(), free_port()]
    hub_cfgs = [hub_toml(d, f"hub-{i}", broker.port, pg.dsn, mports[i - 1]) for i in (1, 2)]
    hubs = [spawn(["hub", "run", "-c", str(c)], d / f"{c.stem}.log") for c in hub_cfgs]
    lines: list[Line] = []
    groups: list[LineProcs] = []
    faults = json.loads(args.faults)
    try:
        time.sleep(2)  # the hubs' shared subscriptions exist before the agents publish
        cfgs: list[tuple[str, Path, LineConfig]] = []
        for a in range(1, args.agents + 1):
            name = f"line-{a:02d}"
            (d / name).mkdir()
            cfg = LineConfig(rate_per_h=args.rate, duration_s=args.seconds, seed=a,
                             window_ms=400, node=("S1", name.upper(), name), **faults)  # fmt: skip
            cfgs.append((name, d / name, cfg))
        k = args.lines_per_proc
        for g in range(0, len(cfgs), k):  # the children start their simulators in parallel
            groups.append(LineProcs(cfgs[g : g + k], d / f"sim-{g // k + 1:02d}.json",
                                    d / f"sim-{g // k + 1:02d}.log"))  # fmt: skip
        by_name = {name: cfg for name, _, cfg in cfgs}
        for grp in groups:
            for name, toml in grp.ready(60 + 2 * args.agents).items():
                ln = Line(name, LineSim(by_name[name]), grp, toml, log=d / name / "log")
                ln.proc = spawn(["run", "-c", str(agent_toml(d / name, ln, broker.port))],
                                ln.log)  # fmt: skip
                lines.append(ln)
        down = [ln.name for ln in lines if not devices_up(ln, 30 + 0.5 * args.agents)]
        if down:
            msg = f"agents without all devices connected: {down}"
            raise RuntimeError(msg)
        ids = {ln.name: {r["id"] for r in ln.sim.readings()} for ln in lines}  # the truth
        for ln in lines:
            assert ln.proc is not None
            ln.cpu0 = usage(ln.proc.pid)[1]
        sim_cpu0 = sum(usage(grp.proc.pid)[1] for grp in groups)
        # every line starts after the same warm-up, its first parcel staggered over one period
        # (not every line's first readings in the same instant)
        t0 = time.time() + args.warmup_s
        period = 3600 / args.rate
        offset = {ln.name: period * i / len(lines) for i, ln in enumerate(lines)}
        for grp in groups:
            grp.go(t0, {n: offset[n] for n in grp.names})
        print(f"fleet-lines: {args.agents} lines at {args.rate:g} parcels/h, {args.seconds:g} s, "
              f"faults {faults or 'default'}, {len(groups)} simulator processes",
              flush=True)  # fmt: skip
        time.sleep(max(0.0, t0 - time.time()))
        load0 = os.getloadavg()[0]
        dup, t_up = 0.0, 0.0
        if args.chaos:
            time.sleep(args.seconds / 3)
            dup += absorbed(scrape(mports[0]))
            hubs[0].kill()
            hubs[0].wait()
            print("chaos: kill -9 hub-1 (restarted 2 s later)", flush=True)
            time.sleep(2)
            hubs[0] = spawn(["hub", "run", "-c", str(hub_cfgs[0])], d / "hub-1.log")
            time.sleep(max(0.0, args.seconds / 3 - 2))
            print("chaos: broker restart (down 1 s)", flush=True)
            broker.stop()
            time.sleep(1.0)
            t_up = time.time()  # from the start command: an agent may connect before start()
            broker.start()  # returns (it waits for the port)
        load1 = os.getloadavg()[0]
        for grp in groups:
            for name, res in grp.done(args.seconds + period + 60).items():
                ln = next(x for x in lines if x.name == name)
                ln.written, ln.by_id, ln.slips = res.written, res.by_id, res.slips
                if set(ln.by_id) != ids[name]:
                    ln.problems.append("the child's readings are not the parent's truth")
        sim_cpu = sum(usage(grp.proc.pid)[1] for grp in groups) - sim_cpu0
        for ln in lines:
            assert ln.proc is not None
            ln.usage = usage(ln.proc.pid)
        deadline = time.monotonic() + args.settle_s
        with psycopg.connect(pg.dsn, autocommit=True) as conn:
            while not settled(conn, lines) and time.monotonic() < deadline:
                time.sleep(0.5)
            time.sleep(1.0)  # anything late would be an extra row: give it the chance to show
            for ln in lines:
                ln.problems += compare(conn, ln.sim.cfg.node[2], ln.sim, ln.by_id)
            view = fleet(conn, load_hub_config(hub_cfgs[1]))
            for ln in lines:
                ln.problems += kpis(view, ln.sim.cfg.node[2], ln.sim)
            report = figures(conn, lines)
        dup += sum(absorbed(scrape(p)) for p in mports)
        written = sum(len(w) for ln in lines for w in ln.written.values())
        spread = [reconnect_after(ln.log, t_up) for ln in lines] if args.chaos else []
        ok_spread = [s for s in spread if s is not None]
        report |= {
            "agents": args.agents,
            "readings_written": written,
            "duplicates_absorbed": int(dup),
            "reconnect_s_min": round(min(ok_spread), 2) if ok_spread else None,
            "reconnect_s_max": round(max(ok_spread), 2) if ok_spread else None,
            "agents_not_reconnected": len(spread) - len(ok_spread),
            "parcels": sum(len(ln.sim.truth) for ln in lines),
            "exceptions_expected": sum(len(ln.sim.expected) for ln in lines),
            "injected": dict(Counter(f for ln in lines for fs in ln.sim.faults for f in fs)),
            "rss_mib_mean": round(statistics.mean(ln.usage[0] for ln in lines), 1),
            "cpu_pct_mean": round(
                statistics.mean(100 * (ln.usage[1] - ln.cpu0) / args.seconds for ln in lines), 1
            ),
            "problems": {ln.name: ln.problems[:20] for ln in lines if ln.problems},
            # the simulator's own timing: a line whose readings reached the wire late by a
            # good part of the station window (400 ms) no longer matches its truth
            "sim_slip_ms_p99": round(pct([x for ln in lines for x in ln.slips], 0.99), 1),
            "sim_processes": len(groups),
            "sim_cpu_pct_per_line": round(100 * sim_cpu / args.seconds / len(lines), 1),
            "loadavg_1m_start_end": [round(load0, 2), round(load1, 2)],
            "sim_slip_ms_max_by_line": {
                ln.name: round(max(ln.slips, default=0.0), 1) for ln in lines
            },
        }
        report["ok"] = (
            not report["problems"]
            and report["open_gaps"] == 0
            and written == report["readings_in_db"]
        )
        return report
    finally:
        for ln in lines:
            if ln.proc is not None:
                ln.proc.terminate()
        for p in hubs:
            p.terminate()
        for p in [*hubs, *(ln.proc for ln in lines if ln.proc is not None)]:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        for grp in groups:
            grp.stop()
        broker.stop()
        pg.stop()


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m simulators.fleet_lines", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--agents", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--rate", type=float, default=6000.0, help="parcels/h per line")
    ap.add_argument(
        "--faults", default="{}", help='LineConfig fault shares, JSON: {"noread": 0.05}'
    )
    ap.add_argument("--lines-per-proc", type=int, default=5,
                    help="lines whose device simulators share one child process")  # fmt: skip
    ap.add_argument("--warmup-s", type=float, default=2.0,
                    help="from the go signal to the first line's start, s")  # fmt: skip
    ap.add_argument("--no-chaos", dest="chaos", action="store_false")
    ap.add_argument("--settle-s", type=float, default=60.0, help="wait for PostgreSQL, s")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--json", type=Path, help="write the report here too")
    return ap


def cli(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    with fleet_dir(args.keep) as d:
        report = run(args, d)
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(cli())
