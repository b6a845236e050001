"""The PNG chart: six panels, edge-agent against the same-run baseline, bars are medians and
whiskers the min..max of the repeats; dashed lines are the issue's goals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.patches import Rectangle

EDGE, BASE, LIB = "#1f77b4", "#d62728", "#7f7f7f"


def _bar(ax: Axes, x: float, s: dict[str, Any], color: str, width: float = 0.8) -> None:
    med = s.get("median")
    if not med:  # nothing to draw on a log axis: say so
        ax.annotate(
            "n/a" if med is None else "0",
            (x, 0),
            xycoords=("data", "axes fraction"),
            xytext=(0, 4),
            textcoords="offset points",
            ha="center",
            color=color,
        )
        return
    err = [[med - s["min"]], [s["max"] - med]]
    ax.bar(x, med, width, color=color, yerr=err, capsize=3)


def render(doc: dict[str, Any], path: Path) -> None:
    """Draw ``doc`` (the results JSON) into ``path``."""
    figs = {f["key"]: f for f in doc["figures"]}
    refs = {r["key"]: r for r in doc["references"]}
    fig, axes = plt.subplots(2, 3, figsize=(17, 9.5))
    mode = "quick" if doc["meta"]["quick"] else "full"
    fig.suptitle(
        f"edge-agent vs baseline (persist-queue + paho), same run, {mode} "
        f"({doc['meta']['started_utc']})"
    )

    ax = axes[0][0]
    bars = [
        ("edge drain", figs["drain_rate"]["edge"], EDGE),
        ("edge live", figs["live_rate"]["edge"], EDGE),
        ("baseline drain", figs["drain_rate"]["baseline"], BASE),
        ("baseline live", figs["live_rate"]["baseline"], BASE),
        ("paho 1/msg", refs["paho_raw"]["value"], LIB),
        ("paho 100/msg", refs["paho_batch"]["value"], LIB),
        ("mosquitto_pub", refs["mosquitto_pub"]["value"], LIB),
    ]
    for i, (_, s, c) in enumerate(bars):
        _bar(ax, i, s, c)
    ax.set_xticks(range(len(bars)), [b[0] for b in bars], rotation=30, ha="right")
    ax.set_yscale("log")
    ax.set_ylabel("readings/s (msgs/s for 1/msg clients)")
    ax.axhline(100_000, ls="--", c="k", lw=0.8)
    ax.axhline(20_000, ls=":", c="k", lw=0.8)
    ax.set_title("Throughput (goals: drain 100k, live 20k)")

    ax = axes[0][1]
    rates = [f"{r:g}" for r in doc["meta"]["settings"]["rates"]]
    r_lo, r_hi = rates[0], rates[-1]
    keys = [
        (f"p50\n@{r_lo}/s", f"latency_p50@{r_lo}", 1.0),
        (f"p99\n@{r_lo}/s", f"latency_p99@{r_lo}", 2.0),
        (f"p99\n@{r_hi}/s", f"latency_p99@{r_hi}", 5.0),
    ]
    for i, (_, k, goal) in enumerate(keys):
        _bar(ax, i * 3, figs[k]["edge"], EDGE)
        _bar(ax, i * 3 + 1, figs[k]["baseline"], BASE)
        if goal:
            ax.hlines(goal, i * 3 - 0.5, i * 3 + 1.5, colors="k", linestyles="--", lw=0.8)
    ax.set_xticks([0.5, 3.5, 6.5], [k[0] for k in keys])
    ax.set_yscale("log")
    ax.set_ylabel("ms, last byte on pty -> subscriber")
    ax.set_title(f"Latency (targets of issue 13), {doc['meta']['settings']['devices']} devices")

    ax = axes[0][2]
    cost = [
        (f"CPU µs/reading\n@{r_hi}/s", f"cpu_per_reading@{r_hi}", 100.0),
        ("idle CPU %\nof a core", "idle_cpu", 0.05),
        ("peak RSS MB", "peak_rss", 60.0),
    ]
    for i, (_, k, goal) in enumerate(cost):
        _bar(ax, i * 3, figs[k]["edge"], EDGE)
        _bar(ax, i * 3 + 1, figs[k]["baseline"], BASE)
        ax.hlines(goal, i * 3 - 0.5, i * 3 + 1.5, colors="k", linestyles="--", lw=0.8)
    ax.set_xticks([0.5, 3.5, 6.5], [c[0] for c in cost])
    ax.set_yscale("log")
    ax.set_title("Cost")

    for col, (metric, label) in enumerate(
        (("rate", "drain readings/s"), ("cpu_us_per_reading", "CPU µs per reading"))
    ):
        ax = axes[1][col]
        for kind, color in (("edge", EDGE), ("baseline", BASE)):
            pts = [g for g in doc["growth"] if g["kind"] == kind and g[metric]["median"]]
            if not pts:
                continue
            xs = [g["size"] for g in pts]
            ys = [g[metric]["median"] for g in pts]
            lo = [g[metric]["median"] - g[metric]["min"] for g in pts]
            hi = [g[metric]["max"] - g[metric]["median"] for g in pts]
            ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", color=color, label=kind, capsize=3)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("queued readings")
        ax.set_ylabel(label)
        ax.legend(loc="lower left")
        ax.set_title(f"Growth: {label}")
    ax = axes[1][1]
    rss_ax = ax.twinx()
    pts = [g for g in doc["growth"] if g["kind"] == "edge" and g["peak_rss_mb"]["median"]]
    rss_ax.plot(
        [g["size"] for g in pts],
        [g["peak_rss_mb"]["median"] for g in pts],
        "s--",
        color="#2ca02c",
        label="edge peak RSS MB",
    )
    rss_ax.set_ylabel("edge-agent peak RSS, MB")
    rss_ax.set_ylim(bottom=0)
    rss_ax.legend(loc="upper left")

    ax = axes[1][2]
    times = [
        ("READY\nempty", "ready_empty", 1.0),
        ("READY\nbacklog", "ready_backlog", 1.0),
        ("SIGTERM\nline rate", "sigterm_line", 2.0),
        ("SIGTERM\nsaturated", "sigterm_saturated", 2.0),
    ]
    for i, (_, k, goal) in enumerate(times):
        _bar(ax, i * 3, figs[k]["edge"], EDGE)
        _bar(ax, i * 3 + 1, figs[k]["baseline"], BASE)
        ax.hlines(goal, i * 3 - 0.5, i * 3 + 1.5, colors="k", linestyles="--", lw=0.8)
    ax.set_xticks([0.5 + 3 * i for i in range(len(times))], [t[0] for t in times])
    ax.set_ylabel("seconds")
    ax.set_title("Start and stop")

    handles = [Rectangle((0, 0), 1, 1, color=c) for c in (EDGE, BASE, LIB)]
    fig.legend(
        handles,
        ["edge-agent", "baseline (persist-queue + paho)", "client library alone"],
        loc="lower center",
        ncol=3,
    )
    fig.tight_layout(rect=(0, 0.04, 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)
