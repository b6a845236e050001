"""A demo fleet on one machine: simulated scanners -> N agents -> Mosquitto -> 2 hubs -> PostgreSQL.

Not a device simulator (its entry point is ``cli``, so ``edge-agent simulate`` does not list it).

``python -m simulators.fleet --agents 5 --seconds 20`` (``scripts/demo-fleet``) starts, in a
fresh temporary directory, a private PostgreSQL and Mosquitto on free ports, two
``edge-agent hub run`` instances (one shared-subscription group), and N real ``edge-agent run``
processes, each with its own simulated scanners on real ptys. It lets them run, stops the
scanners, waits until every reading the agents committed is in PostgreSQL, then prints the
fleet view (``edge-agent hub status``), each agent's RSS and CPU, and the check: readings
committed by the agents = readings in PostgreSQL (each id once). Everything it started is
stopped and its directory removed at the end (^C included).

The scanners are the serial line scanner simulator (``simulators/serial_line_scanner.py``), not
whole stations (``simulators/line``): this is the demo, not the fleet-at-scale benchmark.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg

from simulators.mosquitto import Mosquitto
from simulators.postgres import Postgres
from simulators.pty_port import PtyPort
from simulators.serial_line_scanner import ScannerSim, ScannerSimConfig

ROOT = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")


def agent_toml(d: Path, name: str, port: int, scanners: list[ScannerSim]) -> Path:
    lines = [
        f'[node]\nsite = "S1"\nline = "{name.upper()}"\nagent_id = "{name}"',
        f'[mqtt]\nbrokers = [{{ host = "127.0.0.1", port = {port} }}]\nreconnect_max_s = 1',
        f'[queue]\npath = "{d / "queue.db"}"',
        '[log]\nformat = "json"\nlevel = "warning"',
        f'[control]\nsocket = "{d / "ctl.sock"}"',
    ]
    for i, s in enumerate(scanners, 1):
        lines.append(
            f'[devices.scan_{i}]\ntype = "serial_line_scanner"\nport = "{s.port.link}"\n'
            f'framing = "terminator"\nterminator = "CRLF"\naim_ids = true'
        )
    devs = '"scan_1"'  # one scanner is the station; the others only stream readings
    lines.append(
        f'[stations.st1]\ndevices = [{devs}]\ncorrelation = "window"\n'
        f"trigger_devices = [{devs}]\nwindow_ms = 100\nclose_delay_ms = 100\n"
        "dedup_window_ms = 2000\nrequire_weight = false\nkpi_interval_s = 5"
    )  # each scan_1 code is a parcel passage: parcel/exception events for the fleet view's KPIs
    path = d / "agent.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def hub_toml(
    d: Path, name: str, port: int, dsn: str, hub: str = "gap_grace_s = 5\n", *,
    sections: str = "", level: str = "warning",
) -> Path:  # fmt: skip
    """A hub instance's config: ``hub`` lines in ``[hub]``, whole ``sections`` after it."""
    path = d / f"{name}.toml"
    path.write_text(
        f'[hub]\ninstance = "{name}"\n{hub}[mqtt]\n'
        f'brokers = [{{ host = "127.0.0.1", port = {port} }}]\n[database]\ndsn = "{dsn}"\n'
        f'{sections}[log]\nformat = "json"\nlevel = "{level}"\n'
    )
    return path


def spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as f:
        return subprocess.Popen(
            [sys.executable, "-m", "edge_agent", *args],
            stdout=subprocess.DEVNULL,
            stderr=f,
            cwd=ROOT,
        )


def usage(pid: int) -> tuple[float, float]:
    """(RSS MiB, CPU seconds) of a running process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / TICK
    rss = next(
        int(x.split()[1]) for x in Path(f"/proc/{pid}/status").read_text().splitlines()
        if x.startswith("VmRSS:")
    )  # fmt: skip
    return rss / 1024, cpu


def committed(db: Path) -> tuple[set[str], set[str]]:
    """Ids of the rows the broker acknowledged, and of every row in the agent's queue (KPI
    snapshots aside: the hub keeps the latest per station, not each)."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT id, sent_ns FROM outbox WHERE kind <> 'kpi'").fetchall()
    finally:
        con.close()
    return {i for i, sent in rows if sent is not None}, {i for i, _ in rows}


@contextlib.contextmanager
def fleet_dir(keep: bool) -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="edge-fleet-"))
    try:
        yield d
    finally:
        if not keep:
            shutil.rmtree(d, ignore_errors=True)


def run(args: argparse.Namespace, d: Path) -> int:
    pg = Postgres(d / "pg")
    pg.start()
    broker = Mosquitto(d / "broker")
    broker.start()
    procs: list[subprocess.Popen[bytes]] = []
    sims: list[ScannerSim] = []
    try:
        for h in ("hub-1", "hub-2"):
            procs.append(spawn(["hub", "run", "-c", str(hub_toml(d, h, broker.port, pg.dsn))],
                               d / f"{h}.log"))  # fmt: skip
        time.sleep(2)  # the hubs' sessions exist before the agents publish
        agents: list[tuple[str, subprocess.Popen[bytes], Path]] = []
        for a in range(1, args.agents + 1):
            name = f"agent-{a:02d}"
            ad = d / name
            ad.mkdir()
            mine = []
            for k in range(1, args.scanners + 1):
                port = PtyPort(ad / f"scan{k}")
                port.plug()
                cfg = ScannerSimConfig(rate=args.rate, seed=a * 10 + k, scanner_no=k,
                                       faults={"noread": 0.01})  # fmt: skip
                mine.append(ScannerSim(port, cfg))
            sims += mine
            p = spawn(["run", "-c", str(agent_toml(ad, name, broker.port, mine))], ad / "log")
            agents.append((name, p, ad / "queue.db"))
        time.sleep(2)
        for s in sims:
            s.start()
        print(f"fleet: {args.agents} agents x {args.scanners} scanners at {args.rate}/s each, "
              f"2 hubs, PostgreSQL; running {args.seconds:g} s", flush=True)  # fmt: skip
        cpu0 = {n: usage(p.pid)[1] for n, p, _ in agents}
        if args.chaos:
            time.sleep(args.seconds / 3)
            print("chaos: kill -9 hub-1 (restarted 2 s later)", flush=True)
            procs[0].kill()
            procs[0].wait()
            time.sleep(2)
            procs[0] = spawn(["hub", "run", "-c", str(d / "hub-1.toml")], d / "hub-1.log")
            time.sleep(args.seconds / 3 - 2)
            print("chaos: broker restart (down 1 s)", flush=True)
            broker.restart(down_s=1.0)
            time.sleep(args.seconds / 3)
        else:
            time.sleep(args.seconds)
        stats = {n: usage(p.pid) for n, p, _ in agents}
        for s in sims:
            s.stop()
        time.sleep(3)  # the last passages close, their events are published
        view = subprocess.run(
            [sys.executable, "-m", "edge_agent", "hub", "status", "-c", str(d / "hub-1.toml")],
            capture_output=True, text=True, cwd=ROOT, check=False,
        )  # fmt: skip
        print(view.stdout or view.stderr)  # while the agents still run: online
        for _, p, _ in agents:
            p.terminate()
        for _, p, _ in agents:
            p.wait(20)
        ids: set[str] = set()  # every row an agent got a PUBACK for must be in PostgreSQL
        every: set[str] = set()  # and PostgreSQL holds nothing the agents did not commit
        for _, _, db in agents:
            sent, rows = committed(db)
            ids |= sent
            every |= rows
        unsent = len(every - ids)
        deadline = time.monotonic() + 120
        with psycopg.connect(pg.dsn, autocommit=True) as conn:
            union = " UNION ALL ".join(
                f"SELECT id FROM {t}" for t in ("readings", "parcels", "exceptions")
            )
            while time.monotonic() < deadline:
                in_db = {str(r[0]) for r in conn.execute(union)}
                if ids <= in_db:
                    break
                time.sleep(0.5)
        print("per agent: RSS MiB, CPU % of one core over the run")
        for n, (rss, cpu) in sorted(stats.items()):
            print(f"  {n}  {rss:6.1f} MiB  {100 * (cpu - cpu0[n]) / args.seconds:5.1f} %")
        missing, extra = len(ids - in_db), len(in_db - every)
        if missing:
            lost = []
            for name, _, db in agents:
                con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
                for rid, kind, dev, seq, sent, payload in con.execute(
                    "SELECT id, kind, device, seq, sent_ns, payload FROM outbox"
                ):
                    if rid not in in_db:
                        lost.append([name, kind, dev, seq, sent, json.loads(payload)["ts"]])
                con.close()
            (d / "missing.json").write_text(json.dumps(sorted(lost)))
            print(f"missing readings listed in {d / 'missing.json'}")
        ok = missing == 0 and extra == 0
        print(f"rows (readings, parcel and exception events) the broker acknowledged: {len(ids)} "
              f"(still queued in the agents: {unsent}); in PostgreSQL: {len(in_db)} "
              f"(missing {missing}, unknown {extra}): {'OK' if ok else 'MISMATCH'}")  # fmt: skip
        if args.json:
            per = {
                n: {"rss_mib": rss, "cpu_pct": 100 * (cpu - cpu0[n]) / args.seconds}
                for n, (rss, cpu) in stats.items()
            }
            out = {"agents": per, "committed": len(ids), "in_db": len(in_db), "ok": ok}
            args.json.write_text(json.dumps(out))
        return 0 if ok else 1
    finally:
        for s in sims:
            s.stop()
            s.port.close()
        for p in procs:
            p.terminate()
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(20)
        broker.stop()
        pg.stop()


def cli(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m simulators.fleet", description=__doc__)
    ap.add_argument("--agents", type=int, default=5)
    ap.add_argument("--scanners", type=int, default=3, help="simulated scanners per agent")
    ap.add_argument("--rate", type=float, default=5.0, help="codes/s per scanner")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument(
        "--chaos", action="store_true", help="kill -9 a hub at 1/3, restart the broker at 2/3"
    )
    ap.add_argument("--json", type=Path, help="write the figures here too")
    args = ap.parse_args(argv)
    with fleet_dir(args.keep) as d:
        try:
            return run(args, d)
        except KeyboardInterrupt:
            return 130


if __name__ == "__main__":
    sys.exit(cli())
