"""The writer's group commit under a steady stream: ``[queue] gather_ms`` sets how many readings
share one commit (one fsync) and how long a reading may wait for it. Real SQLite files."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from edge_agent.outbox import Outbox
from edge_agent.reading import Capture, Decoded, Identity, Kind, Reading
from edge_agent.writer import Writer

NODE = Identity(agent="a1", site="S1", line="L1", boot_id="b")
N = 300  # captures, one per ms


def stream(tmp_path: Path, gather_s: float) -> tuple[list[list[tuple[int, Reading]]], float]:
    """``N`` captures at 1,000/s through a writer; returns each commit's readings and the
    longest wait of a capture for its commit (s)."""
    outbox = Outbox(tmp_path / f"q{gather_s}.db", NODE, 1 << 24, 3600)
    commits: list[list[tuple[int, Reading]]] = []
    committed_at: dict[str, float] = {}

    def on_commit(accepted: list[tuple[int, Reading]]) -> None:
        now = time.monotonic()
        commits.append(accepted)
        committed_at.update((r.capture.decoded.raw.decode(), now) for _, r in accepted)

    writer = Writer(outbox, on_commit, lambda _n, _d: None, gather_s)
    writer.start()
    submitted: dict[str, float] = {}
    t0 = time.monotonic()
    for i in range(N):
        code = f"C{i:05d}"
        while time.monotonic() < t0 + i / 1000:
            time.sleep(0.0002)
        submitted[code] = time.monotonic()
        assert writer.submit(Capture.now("d1", Decoded(Kind.BARCODE, code, code.encode())))
    assert writer.sync(5.0)
    writer.stop()
    outbox.close()
    waits = [committed_at[code] - t for code, t in submitted.items()]
    return commits, max(waits)


def test_gather_sets_readings_per_commit_and_bounds_the_wait(tmp_path: Path) -> None:
    results = {g: stream(tmp_path, g) for g in (0.0, 0.02)}
    for commits, _ in results.values():
        rows = [r for c in commits for r in c]
        assert [r.capture.decoded.value for _, r in rows] == [f"C{i:05d}" for i in range(N)]
        assert [r.seq for _, r in rows] == list(range(1, N + 1))
    eager, gathered = (len(results[g][0]) for g in (0.0, 0.02))
    # 0.3 s of stream: with 20 ms between commits at most ~15 (+ slack for a slow machine);
    # committed as it comes, most captures have a commit (an fsync) to themselves
    assert gathered <= 25, gathered
    assert eager >= 4 * gathered, (eager, gathered)
    # a capture waits at most the gather plus one commit (generous: 2 cores under load)
    assert results[0.02][1] < 0.02 + 0.25, results[0.02][1]


def test_a_lone_capture_is_committed_at_once(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "q.db", NODE, 1 << 24, 3600)
    done = threading.Event()
    writer = Writer(outbox, lambda _acc: done.set(), lambda _n, _d: None, 0.05)
    writer.start()
    try:
        time.sleep(0.1)
        t = time.monotonic()
        assert writer.submit(Capture.now("d1", Decoded(Kind.BARCODE, "X1", b"X1")))
        assert done.wait(5.0)
        assert time.monotonic() - t < 0.05  # no gathering without a commit just before it
    finally:
        writer.stop()
        outbox.close()
