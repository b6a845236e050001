"""The capture journal (edge_agent.journal) with a real queue file: what a start replays is
exactly what the last run journaled and did not commit, once, with its original clocks."""

from __future__ import annotations

from pathlib import Path

from edge_agent.journal import Journal, decode, encode, journal_dir
from edge_agent.outbox import Outbox
from edge_agent.reading import Capture, Decoded, Identity, Kind

NODE = Identity(agent="a1", site="S1", line="L1", boot_id="b")


def mark(cap: Capture) -> tuple[int, int]:
    assert cap.mark is not None
    return cap.mark


def code(device: str, i: int) -> Capture:
    value = f"SF{i:013d}"
    raw = b"]C0" + value.encode() + b"\r\n"
    return Capture.now(device, Decoded(Kind.BARCODE, value, raw, symbology="code128", aim="]C0"))


def test_a_line_round_trips_every_field() -> None:
    weight = Decoded(Kind.WEIGHT, 1234.5, b"\x02 1234.5kg\x03", unit="kg", stable=True, gate=2)
    noread = Decoded(Kind.NOREAD, None, b"NoRead\r\n")
    for cap in (code("s1", 7), Capture.now("scale", weight), Capture.now("s1", noread)):
        back = decode(encode(cap), (3, 99))
        assert back == Capture(cap.device, cap.decoded, cap.wall_ns, cap.mono_ns, (3, 99))


def test_what_was_not_committed_is_replayed_once(tmp_path: Path) -> None:
    db = tmp_path / "queue.db"
    outbox = Outbox(db, NODE, 1 << 24, 3600)
    journal, recovered = Journal.open(journal_dir(db), outbox.journal_marks(), outbox.queue_id)
    assert recovered == []
    caps = [journal.append(code(dev, i)) for i in range(10) for dev in ("s1", "s2")]
    assert all(c.mark is not None for c in caps)
    outbox.apply(caps[:13])  # 7 of s1, 6 of s2 committed; the rest died in RAM with a kill -9
    # the process dies here: no close(), no stop
    outbox.close()

    outbox = Outbox(db, NODE, 1 << 24, 3600)
    journal, recovered = Journal.open(journal_dir(db), outbox.journal_marks(), outbox.queue_id)
    assert [(c.device, c.decoded.value, c.wall_ns, c.mono_ns) for c in recovered] == sorted(
        ((c.device, c.decoded.value, c.wall_ns, c.mono_ns) for c in caps[13:]),
        key=lambda t: (t[0], t[1]),
    )
    accepted, _ = outbox.apply(recovered)
    assert [r.seq for _, r in accepted if r.device == "s1"] == [8, 9, 10]
    assert [r.seq for _, r in accepted if r.device == "s2"] == [7, 8, 9, 10]
    # new captures after the replay go to a newer generation
    later = journal.append(code("s1", 99))
    assert mark(later)[0] > max(mark(c)[0] for c in caps)
    outbox.close()

    outbox = Outbox(db, NODE, 1 << 24, 3600)
    journal, recovered = Journal.open(journal_dir(db), outbox.journal_marks(), outbox.queue_id)
    assert [c.decoded.value for c in recovered] == [later.decoded.value]  # only the new one
    outbox.close()


def test_rotation_and_pruning_follow_the_commits(tmp_path: Path) -> None:
    db = tmp_path / "queue.db"
    outbox = Outbox(db, NODE, 1 << 24, 3600)
    journal, _ = Journal.open(journal_dir(db), outbox.journal_marks(), outbox.queue_id)
    journal.ROTATE_BYTES = 1000  # a few captures per generation
    caps = [journal.append(code("s1", i)) for i in range(40)]
    gens = sorted({mark(c)[0] for c in caps})
    assert len(gens) >= 4
    assert len(list(journal_dir(db).glob("s1.*.jsonl"))) == len(gens)
    outbox.apply(caps[:30])
    journal.committed(outbox.last_marks)
    left = sorted(int(p.stem.rpartition(".")[2]) for p in journal_dir(db).glob("*.jsonl"))
    assert left == [g for g in gens if g >= mark(caps[29])[0]]
    outbox.close()
    outbox = Outbox(db, NODE, 1 << 24, 3600)
    _, recovered = Journal.open(journal_dir(db), outbox.journal_marks(), outbox.queue_id)
    assert [c.decoded.value for c in recovered] == [c.decoded.value for c in caps[30:]]
    outbox.close()


def test_a_torn_tail_is_skipped_and_counted(tmp_path: Path) -> None:
    db = tmp_path / "queue.db"
    outbox = Outbox(db, NODE, 1 << 24, 3600)
    journal, _ = Journal.open(journal_dir(db), outbox.journal_marks(), outbox.queue_id)
    caps = [journal.append(code("s1", i)) for i in range(3)]
    journal.close()
    (path,) = journal_dir(db).glob("s1.*.jsonl")
    with path.open("ab") as f:
        f.write(b'{"dev":"s1","w":1,"m":')  # a power cut in the middle of a line
    _, recovered = Journal.open(journal_dir(db), outbox.journal_marks(), outbox.queue_id)
    assert [c.decoded.value for c in recovered] == [c.decoded.value for c in caps]
    outbox.close()


def test_a_failed_append_passes_the_capture_on_unmarked(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j", 1)
    (tmp_path / "j" / "s1.1.jsonl").mkdir()  # the file cannot be opened for writing
    cap = code("s1", 1)
    assert journal.append(cap) == cap  # unmarked, not dropped
    assert journal.failed == 1
    nxt = code("s1", 2)  # the next append tries a new generation
    assert journal.append(nxt).mark == (2, len(encode(nxt)))


def test_a_journal_left_by_another_queue_file_is_discarded(tmp_path: Path) -> None:
    db = tmp_path / "queue.db"
    outbox = Outbox(db, NODE, 1 << 24, 3600)
    journal, _ = Journal.open(journal_dir(db), outbox.journal_marks(), outbox.queue_id)
    journal.append(code("s1", 1))  # read, not committed
    outbox.close()
    for path in tmp_path.glob("queue.db*"):
        if path.is_file():
            path.unlink()  # a technician starts the queue anew
    outbox = Outbox(db, NODE, 1 << 24, 3600)
    _, recovered = Journal.open(journal_dir(db), outbox.journal_marks(), outbox.queue_id)
    assert recovered == []  # not replayed into a queue that never had its marks
    assert list(journal_dir(db).glob("*.jsonl")) == []
    outbox.close()
