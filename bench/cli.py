"""``python -m bench [--quick] [options]``: run everything, write JSON, markdown and a PNG.

Repeats are interleaved (baseline, then edge-agent, for each scenario, in every repeat), so
a burst of load from other work on the machine hits both sides alike; every ratio compares
two medians of the same invocation against the same broker.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import importlib.metadata
import os
import platform
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import report, targets
from bench.agents import EdgeAgent
from bench.common import Broker, fs_type, loadavg
from bench.faults import crash, outage
from bench.lines import sample_readings
from bench.node_red import DEFAULT_CACHE, PeerUnavailableError, ensure_installed
from bench.prefill import prefill_baseline, prefill_edge
from bench.scenarios import Ctx, Settings, drain, line_session, mosquitto_pub, paho_raw, saturation

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ("drain", "line", "live", "faults", "libs")
PEERS = ("node-red", "floor")
FULL_DRAIN = 1_000_000

#: (full, quick) defaults.
DEFAULTS: dict[str, tuple[Any, Any]] = {
    "repeats": (3, 1),
    "sizes": ("10000,100000,1000000", "1000,3000"),
    "baseline_sizes": ("2000,10000", "200"),
    "warmup_seconds": (3.0, 0.5),
    "live_seconds": (10.0, 1.0),
    "idle_seconds": (20.0, 0.5),
    "rates": ("200,1000", "200,1000"),
    "rate_seconds": (20.0, 1.0),
    "fault_rate": (1000.0, 200.0),
    "outage_seconds": (5.0, 1.0),
    "fault_pre_seconds": (2.0, 0.5),
    "paho_n": (50_000, 2000),
    "paho_batch_n": (500_000, 20_000),
    # mosquitto_pub 2.0.11 -l exits at end of input with messages still queued: above ~50k
    # lines most never reach the broker (200k lines: 69k received). Keep it where it is whole.
    "mosquitto_pub_n": (50_000, 5000),
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="seconds-long smoke run (CI)")
    p.add_argument("--repeats", type=int, help="runs of each scenario (full 3, quick 1)")
    p.add_argument(
        "--sizes",
        help="backlog sizes to drain, comma-separated; the largest is "
        "the headline drain (full 10000,100000,1000000)",
    )
    p.add_argument(
        "--baseline-sizes", help="backlog sizes for the baseline drain (full 2000,10000)"
    )
    p.add_argument("--devices", type=int, default=8, help="scanners for line-rate runs (8)")
    p.add_argument("--live-devices", type=int, default=8, help="scanners for live ingest (8)")
    p.add_argument("--warmup-seconds", type=float, help="live ingest warm-up")
    p.add_argument("--live-seconds", type=float, help="live ingest measuring window")
    p.add_argument("--idle-seconds", type=float, help="idle CPU window")
    p.add_argument(
        "--rates", help="paced rates, readings/s, comma-separated: latency and cost (200,1000)"
    )
    p.add_argument("--rate-seconds", type=float, help="seconds at each paced rate (full 20)")
    p.add_argument("--fault-rate", type=float, help="readings/s through outage/crash (1000)")
    p.add_argument("--outage-seconds", type=float, help="broker down for (full 5)")
    p.add_argument(
        "--fault-pre-seconds", type=float, help="traffic before and after a fault (full 2)"
    )
    p.add_argument(
        "--peers",
        default="",
        help="other agents to run beside edge-agent and the baseline, comma-separated: "
        "node-red (installed with npm into --node-red-cache); floor (bench/floor.py: the least "
        "CPU a durable single-threaded Python agent spends per reading)",
    )
    p.add_argument(
        "--node-red-cache",
        type=Path,
        default=DEFAULT_CACHE,
        help=f"npm --prefix for node-red (default {DEFAULT_CACHE}; reused when present)",
    )
    p.add_argument("--paho-n", type=int, help="readings for paho one-per-message")
    p.add_argument("--paho-batch-n", type=int, help="readings for paho 100-per-payload")
    p.add_argument("--mosquitto-pub-n", type=int, help="messages for mosquitto_pub -l")
    p.add_argument(
        "--max-bytes",
        type=int,
        default=2 << 30,
        help="edge-agent [queue] max_bytes (2 GiB: room for 1M readings)",
    )
    p.add_argument(
        "--gather-ms",
        type=float,
        help="edge-agent [queue] gather_ms (default: the shipped default; README "
        '"CPU against latency"), and the floor peer\'s --publish-ms (default 2)',
    )
    p.add_argument(
        "--broker",
        choices=["plain", "durable"],
        default="plain",
        help="plain: persistence without autosave_on_changes (default); durable: "
        "simulators/mosquitto.py as is (full DB save per queued message)",
    )
    p.add_argument(
        "--only", action="append", choices=SCENARIOS, help="run only these scenarios (repeatable)"
    )
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="results dir")
    p.add_argument("--workdir", type=Path, help="queue files etc. (default: <out>/work-<time>)")
    p.add_argument("--keep-work", action="store_true", help="do not delete the workdir")
    p.add_argument(
        "--edge-root",
        type=Path,
        help="run edge-agent from this source tree (a prototype) instead of this checkout",
    )
    p.add_argument("--no-chart", action="store_true", help="skip the PNG")
    return p


def _opt(args: argparse.Namespace, name: str) -> Any:
    v = getattr(args, name)
    if v is not None:
        return v
    full, quick = DEFAULTS[name]
    return quick if args.quick else full


def _sizes(text: str) -> list[int]:
    return sorted({int(x.replace("_", "")) for x in str(text).split(",") if x.strip()})


def settings_from(args: argparse.Namespace) -> Settings:
    """Resolve quick/full defaults and explicit options."""
    return Settings(
        quick=args.quick,
        repeats=_opt(args, "repeats"),
        sizes=_sizes(_opt(args, "sizes")),
        baseline_sizes=_sizes(_opt(args, "baseline_sizes")),
        devices=args.devices,
        live_devices=args.live_devices,
        warm_s=_opt(args, "warmup_seconds"),
        live_s=_opt(args, "live_seconds"),
        idle_s=_opt(args, "idle_seconds"),
        rates=[float(x) for x in _sizes(_opt(args, "rates"))],
        rate_s=_opt(args, "rate_seconds"),
        fault_rate=_opt(args, "fault_rate"),
        outage_s=_opt(args, "outage_seconds"),
        fault_pre_s=_opt(args, "fault_pre_seconds"),
        peers=[x.strip() for x in str(args.peers).split(",") if x.strip()],
        node_red_cache=args.node_red_cache.expanduser(),
        paho_n=_opt(args, "paho_n"),
        paho_batch_n=_opt(args, "paho_batch_n"),
        paho_batch=100,
        mosquitto_pub_n=_opt(args, "mosquitto_pub_n"),
        max_bytes=args.max_bytes,
        gather_ms=args.gather_ms,
    )


def _version(cmd: list[str]) -> str:
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "not installed"
    return (res.stdout + res.stderr).strip().splitlines()[0] if (res.stdout + res.stderr) else "?"


def _pkg(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def meta(s: Settings, workdir: Path, broker: str) -> dict[str, Any]:
    """Machine, versions, settings."""
    git = _version(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    return {
        "quick": s.quick,
        "started_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ"),
        "cpus": os.cpu_count(),
        "loadavg_start": loadavg(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "paho": _pkg("paho-mqtt"),
        "persist_queue": _pkg("persist-queue"),
        "mosquitto": _version(["mosquitto", "-h"]).replace(" running on", ""),
        "git": git,
        "broker_profile": broker,
        "edge_root": str(EdgeAgent.root),
        "workdir_fs": fs_type(workdir),
        "repeats": s.repeats,
        "settings": s.__dict__,
    }


def _lines_file(path: Path, n: int) -> Path:
    uniq = [r.to_json() for r in sample_readings(min(n, 20_000), "m1", "mosquitto_pub")]
    with path.open("wb") as fh:
        for i in range(n):
            fh.write(uniq[i % len(uniq)] + b"\n")
    return path


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the selected scenarios; returns the results document."""
    s = settings_from(args)
    only = set(args.only or SCENARIOS)
    if args.edge_root:
        EdgeAgent.root = args.edge_root.resolve()
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    workdir = (args.workdir or args.out / f"work-{stamp}").resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    t_begin = time.monotonic()

    def say(msg: str) -> None:
        print(f"[{time.monotonic() - t_begin:7.1f}s] {msg}", file=sys.stderr, flush=True)

    doc: dict[str, Any] = {"meta": meta(s, workdir, args.broker), "errors": []}
    runs: dict[str, Any] = {
        kind: {"drain": {}, "line": [], "saturation": [], "outage": [], "crash": []}
        for kind in ("edge", "baseline", *s.peers)
    }
    runs.update({"paho_raw": [], "paho_batch": [], "mosquitto_pub": []})
    doc["peers"] = {}
    peers: list[str] = []
    for peer in s.peers:
        try:
            info = floor_info(s) if peer == "floor" else ensure_installed(s.node_red_cache, say)
            doc["peers"][peer] = {"ran": True, **info}
            peers.append(peer)
        except PeerUnavailableError as err:
            doc["peers"][peer] = {"ran": False, "skipped": str(err)}
            say(f"peer {peer} skipped: {err}")
    broker = Broker.start(workdir, args.broker)
    ctx = Ctx(s, workdir, broker, say)
    say(f"broker ({args.broker}) on 127.0.0.1:{broker.port}; workdir {workdir}")

    def attempt(label: str, fn: Callable[[], dict[str, Any]], into: list[Any], show: str) -> None:
        try:
            res = fn()
        except Exception as err:  # one failed run must not lose the others
            say(f"{label}: FAILED {err!r}")
            doc["errors"].append(
                {"run": label, "error": repr(err), "trace": traceback.format_exc()}
            )
            return
        into.append(res)
        val = res.get(show)
        say(f"{label}: {show} = {report.fmt(val) if isinstance(val, float | int) else val}")

    try:
        edge_snaps: dict[int, Path] = {}
        base_snaps: dict[int, Path] = {}
        if "drain" in only:
            say(f"prefilling edge-agent queues {s.sizes} with the real Outbox ...")
            edge_snaps, doc["prefill"] = prefill_edge(
                workdir / "prefill", s.sizes, s.devices, "bench-edge", s.max_bytes
            )
            say(
                f"prefilled: {report.fmt(doc['prefill']['readings_per_s'])} readings/s "
                f"through Outbox.apply, {doc['prefill']['db_bytes_largest'] / 1e6:.0f} MB"
            )
            say(f"prefilling baseline queues {s.baseline_sizes} with SQLiteAckQueue.put ...")
            base_snaps = prefill_baseline(workdir / "prefill", s.baseline_sizes, s.devices)
        lines_file = None
        if "libs" in only:
            lines_file = _lines_file(workdir / "lines.txt", s.mosquitto_pub_n)
        for rep in range(s.repeats):
            tag = f"#{rep + 1}/{s.repeats}"
            if "drain" in only:
                for n in s.baseline_sizes:
                    attempt(
                        f"baseline drain {n:,} {tag}",
                        functools.partial(drain, ctx, "baseline", base_snaps[n], n, rep),
                        runs["baseline"]["drain"].setdefault(str(n), []),
                        "rate",
                    )
                for n in s.sizes:
                    attempt(
                        f"edge drain {n:,} {tag}",
                        functools.partial(drain, ctx, "edge", edge_snaps[n], n, rep),
                        runs["edge"]["drain"].setdefault(str(n), []),
                        "rate",
                    )
            if "line" in only:
                for kind in ("baseline", "edge", *peers):
                    attempt(
                        f"{kind} line rate {tag}",
                        functools.partial(line_session, ctx, kind, rep),
                        runs[kind]["line"],
                        "ready_s",
                    )
            if "live" in only:
                for kind in ("baseline", "edge"):
                    attempt(
                        f"{kind} live ingest {tag}",
                        functools.partial(saturation, ctx, kind, rep),
                        runs[kind]["saturation"],
                        "rate",
                    )
            if "faults" in only:
                for kind in ("baseline", "edge", *peers):
                    attempt(
                        f"{kind} broker outage {tag}",
                        functools.partial(outage, ctx, kind, rep),
                        runs[kind]["outage"],
                        "lost",
                    )
                    attempt(
                        f"{kind} crash {tag}",
                        functools.partial(crash, ctx, kind, rep),
                        runs[kind]["crash"],
                        "lost",
                    )
            if "libs" in only and lines_file is not None:
                attempt(
                    f"paho 1/msg {tag}",
                    lambda: paho_raw(ctx, s.paho_n, 1),
                    runs["paho_raw"],
                    "msgs_per_s",
                )
                attempt(
                    f"paho {s.paho_batch}/msg {tag}",
                    lambda: paho_raw(ctx, s.paho_batch_n, s.paho_batch),
                    runs["paho_batch"],
                    "rate",
                )
                attempt(
                    f"mosquitto_pub -l {tag}",
                    lambda: mosquitto_pub(ctx, lines_file, s.mosquitto_pub_n),
                    runs["mosquitto_pub"],
                    "rate",
                )
    finally:
        broker.stop()
        if not args.keep_work:
            shutil.rmtree(workdir, ignore_errors=True)
    doc["meta"]["loadavg_end"] = loadavg()
    doc["meta"]["seconds"] = time.monotonic() - t_begin
    doc["runs"] = runs
    doc["figures"] = report.figures(runs, s.devices, s.rates, peers)
    doc["references"] = report.references(runs)
    doc["growth"] = report.growth(runs)
    n_max = max(s.sizes) if "drain" in only else 0
    doc["goals"] = report.goals(doc["figures"], doc["growth"], FULL_DRAIN, n_max)
    doc["targets"] = targets.evaluate(doc["figures"], ["edge", "baseline", *peers], n_max)
    return doc


def floor_info(s: Settings) -> dict[str, Any]:
    """What the report says of the floor peer (it needs nothing installed)."""
    pub = 2.0 if s.gather_ms is None else s.gather_ms
    return {
        "about": f"bench/floor.py, one thread, each batch published {pub:g} ms after its first "
        "reading and committed (fsync) every 20 ms: the least a durable Python agent can do"
    }


def main(argv: list[str] | None = None) -> int:
    """Run, write ``<out>/<stamp>-<mode>.{json,md,png}`` and ``latest.*``, print the table."""
    parser = _parser()
    args = parser.parse_args(argv)
    unknown = {x.strip() for x in str(args.peers).split(",") if x.strip()} - set(PEERS)
    if unknown:
        parser.error(f"unknown peer(s) {sorted(unknown)}; known: {', '.join(PEERS)}")
    # SIGTERM unwinds like ^C, so every finally block stops its agent, subscriber and broker.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    for tool in ("mosquitto_sub", "mosquitto_pub"):
        if shutil.which(tool) is None:
            print(f"bench: {tool} not found (apt-get install mosquitto-clients)", file=sys.stderr)
            return 2
    args.out.mkdir(parents=True, exist_ok=True)
    doc = run(args)
    stamp = doc["meta"]["started_utc"].replace(":", "").replace("-", "").replace(" ", "T")
    base = args.out / f"{stamp}-{'quick' if args.quick else 'full'}"
    md = report.markdown(doc)
    if doc["errors"]:
        md += "\n## Failed runs\n\n" + "".join(
            f"- {e['run']}: `{e['error']}`\n" for e in doc["errors"]
        )
    outputs = [base.with_suffix(".json"), base.with_suffix(".md")]
    report.write_json(doc, outputs[0])
    outputs[1].write_text(md)
    if not args.no_chart:
        from bench.chart import render  # noqa: PLC0415 - matplotlib is slow to import

        outputs.append(base.with_suffix(".png"))
        render(doc, outputs[2])
    for p in outputs:
        shutil.copyfile(p, args.out / f"latest{p.suffix}")
    print(md)
    print("written: " + ", ".join(str(p) for p in outputs), file=sys.stderr)
    return 1 if doc["errors"] else 0
