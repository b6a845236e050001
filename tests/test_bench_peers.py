"""``bench/run --peers node-red``: skipped with its reason when node/npm are missing, never faked.

The skip test runs the benchmark with a PATH holding only the Mosquitto tools, so ``node``
cannot be found: the reason must be printed and recorded, and no node-red column produced.
The run test needs node-red already in the npm cache (``bench/run --peers node-red`` installs
it once); it runs the line and fault scenarios with tiny sizes and checks that every figure
of the peer was measured against what was actually sent.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.node_red import DEFAULT_CACHE, installed

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ("mosquitto", "mosquitto_sub", "mosquitto_pub")

pytestmark = pytest.mark.skipif(
    any(shutil.which(t) is None for t in TOOLS), reason="mosquitto / mosquitto-clients missing"
)


def _bench(
    args: list[str], out: Path, env: dict[str, str] | None = None, timeout: float = 110
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--no-chart", "--out", str(out), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False, env=env,
    )  # fmt: skip


def _line_and_faults(
    tmp_path: Path, peer_args: list[str]
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """The line and fault scenarios with tiny sizes and a peer; the run and its JSON."""
    pytest.importorskip("persistqueue", reason="the baseline needs persist-queue")
    out = tmp_path / "results"
    args = ["--only", "line", "--only", "faults", "--devices", "2", "--idle-seconds", "0.3"]
    res = _bench([*args, "--rate-seconds", "0.5", *peer_args], out, timeout=150)
    assert res.returncode == 0, res.stderr[-3000:]
    doc = json.loads((out / "latest.json").read_text())
    assert doc["errors"] == []
    return res, doc


def test_node_red_peer_is_skipped_with_its_reason_when_node_is_missing(tmp_path: Path) -> None:
    pytest.importorskip("paho.mqtt", reason="the libs scenario needs paho-mqtt")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in TOOLS:
        (bindir / tool).symlink_to(shutil.which(tool) or tool)
    env = {**os.environ, "PATH": str(bindir)}
    out = tmp_path / "results"
    res = _bench(
        ["--only", "libs", "--peers", "node-red", "--node-red-cache", str(tmp_path / "none"),
         "--paho-n", "50", "--paho-batch-n", "200", "--mosquitto-pub-n", "50"],
        out, env,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert "peer node-red skipped: node not found on PATH" in res.stderr
    doc = json.loads((out / "latest.json").read_text())
    assert doc["peers"]["node-red"]["ran"] is False
    assert "node not found" in doc["peers"]["node-red"]["skipped"]
    assert "node-red" not in doc["runs"] or not any(doc["runs"]["node-red"].values())
    assert all(f["peers"] == {} for f in doc["figures"])
    assert "Peer **node-red** skipped: node not found" in res.stdout
    assert not (tmp_path / "none").exists(), "nothing installed when node is missing"


def test_unknown_peer_is_refused(tmp_path: Path) -> None:
    res = _bench(["--peers", "telegraf"], tmp_path / "results")
    assert res.returncode == 2
    assert "unknown peer" in res.stderr


def test_node_red_peer_runs_beside_edge_agent_and_the_baseline(tmp_path: Path) -> None:
    cache = Path(os.environ.get("EDGE_AGENT_BENCH_NODE_RED_CACHE", DEFAULT_CACHE))
    if shutil.which("node") is None or not installed(cache):
        pytest.skip(
            f"node-red not in the npm cache {cache} (bench/run --peers node-red installs it)"
        )
    res, doc = _line_and_faults(tmp_path, ["--peers", "node-red", "--node-red-cache", str(cache)])
    assert doc["peers"]["node-red"]["ran"] is True
    assert doc["peers"]["node-red"]["versions"]["node-red"] != "not installed"
    figs = {f["key"]: f for f in doc["figures"]}
    for key in ("latency_p50@200", "latency_p99@1000", "cpu_per_reading@1000",
                "ctxsw_per_reading@1000", "idle_cpu", "idle_wakeups", "line_rss",
                "outage_lost", "crash_lost"):  # fmt: skip
        assert figs[key]["peers"]["node-red"]["median"] is not None, key
    (line,) = doc["runs"]["node-red"]["line"]
    for rate in ("200", "1000"):
        assert line["rates"][rate]["samples"] == line["rates"][rate]["readings"] > 0, rate
    (cut,) = doc["runs"]["node-red"]["outage"]
    assert cut["received"] + cut["lost"] == cut["sent"] > cut["sent_during_outage"] > 0
    assert cut["pending"] == 0, "no queue: what did not arrive is lost"
    (crash,) = doc["runs"]["node-red"]["crash"]
    assert crash["received"] + crash["lost"] + crash["unread_at_kill"] == crash["sent"]
    assert "| Figure | Unit | edge-agent | Baseline | node-red |" in res.stdout


def test_floor_peer_runs_and_loses_nothing_across_outage_and_crash(tmp_path: Path) -> None:
    """The floor (bench/floor.py) is measured like any agent, and its loss rows are real: it
    re-publishes what was not PUBACKed after a reconnect and after a kill -9."""
    res, doc = _line_and_faults(tmp_path, ["--peers", "floor"])
    assert doc["peers"]["floor"]["ran"] is True
    figs = {f["key"]: f for f in doc["figures"]}
    for key in ("latency_p99@1000", "cpu_per_reading@1000", "ctxsw_per_reading@1000"):
        assert figs[key]["peers"]["floor"]["median"] is not None, key
    (line,) = doc["runs"]["floor"]["line"]
    for rate in ("200", "1000"):
        assert line["rates"][rate]["samples"] == line["rates"][rate]["readings"] > 0, rate
    assert line["after_stop"]["clean_stop"] is True
    (cut,) = doc["runs"]["floor"]["outage"]
    assert cut["sent_during_outage"] > 0
    # pending (committed, never PUBACKed) would excuse a reading from "lost": nothing may be
    assert cut["received"] == cut["sent"] and cut["pending"] == cut["lost"] == 0, cut
    (crash,) = doc["runs"]["floor"]["crash"]
    assert crash["pending"] == crash["lost"] == 0, crash
    assert crash["received"] + crash["unread_at_kill"] == crash["sent"], crash
    assert "| Figure | Unit | edge-agent | Baseline | floor |" in res.stdout
