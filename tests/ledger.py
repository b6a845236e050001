"""The accounting oracle of the fault suite (docs/reliability.md (c)):
every emitted id accounted for.

After a fault test, every reading is in exactly one of these places:

* **received** by the backend (possibly more than once, but always under the same id and seq);
* **inside a logged downtime window** (the agent was dead or the port unplugged when the
  simulator emitted it), reported as a gap;
* **counted as dropped** by the agent (queue bound, writer overflow), with an alarm.

And for the agent's own queue: every committed row reached the backend (``missing == 0``),
``seq`` has no holes per device, ids are well-formed UUIDv7, ``PRAGMA integrity_check`` is ok.

``check()`` asserts all of that and returns the figures, which are also appended as one JSON
line to ``$EDGE_AGENT_FIGURES`` when set (the closing note's table is built from it).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from simulators.serial_line_scanner import ScannerSim
from tests.harness import Subscriber, queue_rows

UUID7 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


@dataclass(frozen=True)
class Emitted:
    """One reading a simulator emitted: its device id in the agent, its value, wall time."""

    device: str
    value: object  # the reading's "value": a barcode string, None for a no-read, grams
    t: float


@dataclass
class Figures:
    """What a fault test measured; ``check()`` asserts the invariants on these."""

    test: str
    committed: int = 0
    received: int = 0
    unique: int = 0
    duplicates: int = 0
    dup_ratio: float = 0.0
    missing: int = 0
    emitted: int = 0
    emitted_received: int = 0
    in_downtime: int = 0
    dropped: int = 0
    unaccounted: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def scanner_emitted(device: str, sim: ScannerSim) -> list[Emitted]:
    """What a scanner simulator delivered (codes and no-reads), as ``device`` in the agent."""
    return [
        Emitted(device, t.value, t.t)
        for t in sim.truth
        if t.kind in ("barcode", "noread") and t.delivered
    ]


def check(
    test: str,
    backend: Subscriber | Sequence[dict[str, Any]],
    db: Path,
    *,
    emitted: Iterable[Emitted] = (),
    downtime: Sequence[tuple[float, float]] = (),
    dropped: int = 0,
    max_dup_ratio: float = 0.05,
    devices: Iterable[str] | None = None,
    **extra: Any,
) -> Figures:
    """Assert the ledger and return the figures.

    Args:
        test: a name for the figures line.
        backend: the subscriber, or the readings it received (already expanded from batches).
        db: the agent's queue file (opened read-only; integrity_check must say ok).
        emitted: what the simulators emitted; each must be received, in a downtime window,
            or covered by ``dropped``.
        downtime: (start, end) wall-time windows in which readings may be lost unseen.
        dropped: readings the agent itself counted as dropped and alarmed.
        max_dup_ratio: bound on (received - unique) / unique.
        devices: restrict to these device ids (default: every device in the queue).
        extra: more figures for the report (reconnect times, fd counts ...).
    """
    readings: list[dict[str, Any]] = (
        [r for _, r in backend.readings()] if isinstance(backend, Subscriber) else list(backend)
    )
    rows = queue_rows(db)
    if devices is not None:
        keep = set(devices)
        rows = [r for r in rows if r["device"] in keep]
        readings = [r for r in readings if r.get("device") in keep]
    fig = Figures(test=test, extra=dict(extra))
    fig.committed = len(rows)
    fig.received = len(readings)
    ids = {r["id"] for r in readings}
    fig.unique = len(ids)
    fig.duplicates = fig.received - fig.unique
    fig.dup_ratio = fig.duplicates / fig.unique if fig.unique else 0.0
    missing = [r for r in rows if r["id"] not in ids]
    fig.missing = len(missing)

    # duplicates carry the same id and seq (I3); ids are UUIDv7
    by_key: dict[tuple[str, int], set[str]] = {}
    for r in readings:
        by_key.setdefault((r["device"], r["seq"]), set()).add(r["id"])
    split = {k: v for k, v in by_key.items() if len(v) > 1}
    bad_ids = [i for i in ids if not UUID7.match(i)]
    # seq has no holes among committed rows, per device
    holes = {}
    for dev in {r["device"] for r in rows if r["payload"].get("schema", "").startswith("reading")}:
        seqs = sorted(r["seq"] for r in rows if r["device"] == dev)
        if seqs != list(range(seqs[0], seqs[0] + len(seqs))):
            holes[dev] = (seqs[0], seqs[-1], len(seqs))

    # every emitted reading: received, in a downtime window, or dropped
    seen = {(r["device"], r.get("value")) for r in readings}
    unaccounted = []
    for e in emitted:
        fig.emitted += 1
        if (e.device, e.value) in seen:
            fig.emitted_received += 1
        elif any(a <= e.t <= b for a, b in downtime):
            fig.in_downtime += 1
        else:
            unaccounted.append(e)
    fig.dropped = dropped
    fig.unaccounted = max(0, len(unaccounted) - dropped)

    _record(fig)
    assert not missing, f"{len(missing)} committed readings never arrived: {missing[:3]}"
    assert not split, f"a (device, seq) arrived under two ids: {list(split.items())[:3]}"
    assert not bad_ids, f"malformed ids: {bad_ids[:3]}"
    assert not holes, f"seq holes among committed rows: {holes}"
    assert fig.dup_ratio <= max_dup_ratio, f"dup_ratio {fig.dup_ratio:.4f} > {max_dup_ratio}"
    assert fig.unaccounted == 0, (
        f"{len(unaccounted)} emitted readings neither received nor in downtime "
        f"(dropped {dropped}): "
        + "; ".join(f"{e} nearest window {_nearest(e.t, downtime)}" for e in unaccounted[:5])
    )
    return fig


def _nearest(t: float, windows: Sequence[tuple[float, float]]) -> str:
    if not windows:
        return "none"
    a, b = min(windows, key=lambda w: min(abs(t - w[0]), abs(t - w[1])))
    return f"starts {t - a:+.3f} s / ends {t - b:+.3f} s from the reading"


def _record(fig: Figures) -> None:
    path = os.environ.get("EDGE_AGENT_FIGURES")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(asdict(fig), default=str) + "\n")
