"""The benchmark cannot rot: run ``python -m bench --quick`` with tiny sizes, check its output.

Only the structure is asserted (every figure measured on both sides, goals evaluated, the
three result files written), never a speed: CI machines are too noisy for timed tests.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(
    shutil.which("mosquitto_sub") is None or shutil.which("mosquitto_pub") is None,
    reason="mosquitto-clients not installed",
)

TINY = [
    "--quick", "--repeats", "1", "--sizes", "300,600", "--baseline-sizes", "50",
    "--devices", "2", "--live-devices", "2", "--warmup-seconds", "0.2",
    "--live-seconds", "0.3", "--idle-seconds", "0.2", "--rate-seconds", "0.3",
    "--paho-n", "200", "--paho-batch-n", "2000",
    "--mosquitto-pub-n", "300",
]  # fmt: skip

RATE_FIGURES = (
    "latency_p50",
    "latency_p99",
    "latency_p999",
    "cpu_per_reading",
    "ctxsw_per_reading",
)
FIGURES = {
    "drain_rate", "drain_received_rate", "live_rate", "idle_cpu", "idle_wakeups", "line_rss",
    "peak_rss", "ready_empty", "ready_backlog", "sigterm_line", "sigterm_saturated",
    "outage_lost", "outage_duplicates", "crash_lost", "crash_duplicates",
    *(f"{k}@{r}" for k in RATE_FIGURES for r in (200, 1000)),
}  # fmt: skip


def test_quick_bench_writes_every_figure_against_the_baseline(tmp_path: Path) -> None:
    pytest.importorskip("persistqueue", reason="the baseline needs persist-queue")
    pytest.importorskip("matplotlib", reason="the chart needs matplotlib")
    out = tmp_path / "results"
    res = subprocess.run(
        [sys.executable, "-m", "bench", *TINY, "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=110, check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    doc = json.loads((out / "latest.json").read_text())
    assert (out / "latest.md").read_text().startswith("# edge-agent benchmark")
    assert (out / "latest.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| Figure |" in res.stdout
    assert doc["errors"] == []
    assert doc["meta"]["quick"] is True
    figs = {f["key"]: f for f in doc["figures"]}
    assert set(figs) == FIGURES
    for key, f in figs.items():
        assert f["edge"]["n"] >= 1, key
        assert f["edge"]["median"] is not None, key
        assert f["baseline"]["median"] is not None, key
        assert {"median", "min", "max", "spread", "values"} <= set(f["edge"]), key
        assert f["better"] in ("higher", "lower")
    assert figs["drain_rate"]["ratio"] > 0
    for run in doc["runs"]["edge"]["drain"]["600"]:
        assert run["complete"], run
        assert run["received"] >= 600
    assert {r["key"] for r in doc["references"]} == {"paho_raw", "paho_batch", "mosquitto_pub"}
    assert all(r["value"]["median"] for r in doc["references"])
    assert [g["size"] for g in doc["growth"] if g["kind"] == "edge"] == [300, 600]
    goals = {g["goal"]: g for g in doc["goals"]}
    assert len(goals) == 13
    assert all(g["met"] in (True, False) for g in goals.values())
    assert not list(out.glob("work-*")), "the workdir is removed after the run"
    # issue 13: every target evaluated for both agents; faults counted against what was sent
    targets = {t["figure"]: t for t in doc["targets"]}
    assert {"cpu_per_reading@1000", "latency_p99@200", "idle_wakeups", "crash_lost"} <= set(targets)
    for t in targets.values():
        assert set(t["agents"]) == {"edge", "baseline"}, t
        assert t["agents"]["edge"]["value"] is not None, t
    for kind in ("edge", "baseline"):
        (cut,) = doc["runs"][kind]["outage"]
        assert cut["sent"] > cut["sent_during_outage"] > 0, cut
        assert cut["received"] + cut["not_received"] == cut["sent"], cut
        assert cut["lost"] == max(0, cut["not_received"] - cut["pending"]), cut
        (crash,) = doc["runs"][kind]["crash"]
        assert crash["sent"] > crash["sent_before_kill"] > 0, crash
        assert crash["received"] + crash["not_received"] + crash["unread_at_kill"] == crash["sent"]
        line = doc["runs"][kind]["line"][0]
        assert line["rates"]["1000"]["ctxt"] > 0, "context switches counted over the window"
    assert doc["peers"] == {}
    assert "## Targets (issue 13)" in res.stdout
