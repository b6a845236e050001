"""The capture journal: a reading taken off a port survives a crash of the process (kill -9).

Between the read and its commit a capture lives in RAM for up to ``[queue] gather_ms`` plus
one commit (~3 ms at line rate); a process killed then took it along, a reading lost with no
trace. So each device thread copies every capture into its own journal file, mapped into
memory (``mmap``: no system call, no fsync, and the GIL is not let go), before it hands the
capture on: the kernel keeps the file's pages whatever happens to the process. (A power cut
can take them as it takes the page cache; a committed row is fsynced by SQLite.) Each commit
stores, in the same transaction, how far into each device's journal it has committed
(``journal_mark``: generation and byte offset). The next start reads what lies past the marks
and hands those captures to the writer first: each is committed once, with its own clocks.

Files: ``<queue file>.captures/<device>.<generation>.jsonl``, one JSON array per line
(:func:`encode`), ``ROTATE_BYTES`` long (reserved with ``posix_fallocate``, so a full disk
fails the reservation instead of killing the process with SIGBUS; NUL bytes follow the last
line) and cut to their length when closed. A device begins a new generation when its file is
full; a commit whose mark is in a newer generation deletes the older ones. A line that does
not parse (cut by the kill, torn by a power cut) is skipped and counted. A failed reservation
is logged once and counted, and the capture goes on unjournaled (as safe as before).
"""

from __future__ import annotations

import json
import mmap
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import structlog

from edge_agent.reading import Capture, Decoded, Kind

log = structlog.get_logger(__name__)

#: (generation, byte offset just past a capture's line) in a device's journal.
Mark = tuple[int, int]

_FIELDS = ("unit", "symbology", "aim", "check", "stable", "gate", "channel")
_encode = json.JSONEncoder(separators=(",", ":")).encode


def journal_dir(queue_path: Path) -> Path:
    """Where the journal of the queue at ``queue_path`` lives."""
    return queue_path.with_name(queue_path.name + ".captures")


def encode(cap: Capture) -> bytes:
    """One journal line: ``[device, wall_ns, mono_ns, kind, value, raw hex, unit, symbology,
    aim, check, stable, gate, channel]`` (JSON escapes every control byte: no NUL in a line)."""
    d = cap.decoded
    rec = [cap.device, cap.wall_ns, cap.mono_ns, d.kind.value, d.value, d.raw.hex(), d.unit]
    rec += [d.symbology, d.aim, d.check, d.stable, d.gate, d.channel]
    return (_encode(rec) + "\n").encode()


def decode(line: bytes, mark: Mark) -> Capture:
    """A capture from one journal line. Raises ValueError (also KeyError, TypeError)."""
    device, wall, mono, kind, value, raw, *rest = json.loads(line)
    extra = {k: v for k, v in zip(_FIELDS, rest, strict=True) if v is not None}
    decoded = Decoded(Kind(kind), value, bytes.fromhex(raw), **extra)
    return Capture(str(device), decoded, int(wall), int(mono), mark)


@dataclass(frozen=True, slots=True)
class _File:
    path: Path
    device: str
    gen: int


def _files(directory: Path) -> list[_File]:
    out = []
    for path in directory.glob("*.jsonl"):
        device, _, gen = path.stem.rpartition(".")
        if device and gen.isdigit():
            out.append(_File(path, device, int(gen)))
    return sorted(out, key=lambda f: (f.device, f.gen))


class _Segment:
    """A device's current journal file, mapped into memory (device thread)."""

    def __init__(self, path: Path, gen: int, size: int) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)
        try:
            os.posix_fallocate(fd, 0, size)  # a full disk fails here, not as SIGBUS in a copy
            self.mm = mmap.mmap(fd, size)
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        self.fd, self.gen, self.used = fd, gen, 0

    def close(self) -> None:
        self.mm.close()
        os.ftruncate(self.fd, self.used)  # the NUL tail goes
        os.close(self.fd)


class Journal:
    """The device threads' appender (one mapped file per device) and the writer's pruning.

    Args:
        directory: the journal directory (created).
        first_gen: the generation new files start at (above every one in use).
    """

    #: Bytes of a journal file (reserved with ``posix_fallocate``): ~1,700 captures. Small,
    #: because the pages written count in the daemon's RSS until the file is closed.
    ROTATE_BYTES = 256 << 10

    def __init__(self, directory: Path, first_gen: int) -> None:
        directory.mkdir(mode=0o750, exist_ok=True)
        self.dir = directory
        self._first_gen = first_gen
        self._open: dict[str, _Segment] = {}  # device -> its current file
        self._gen: dict[str, int] = {}  # device -> its last generation
        self._locks: dict[str, threading.Lock] = {}  # device -> the lock of its file
        self._pruned: dict[str, int] = {}  # device -> generations below this are deleted
        #: Appends that failed (disk full, I/O error); their captures went on unjournaled.
        self.failed = 0

    @classmethod
    def open(
        cls, directory: Path, marks: Mapping[str, Mark], queue_id: str
    ) -> tuple[Journal, list[Capture]]:
        """The journal of a starting daemon, and the captures its last run read but did not
        commit (in read order per device). Files wholly committed are deleted, and so is a
        journal left by another queue file (one deleted and made anew: its marks are gone)."""
        directory.mkdir(mode=0o750, exist_ok=True)
        owner = directory / "queue_id"
        if (owner.read_text().strip() if owner.exists() else queue_id) != queue_id:
            stale = list(directory.glob("*.jsonl"))
            log.warning("journal_discarded", files=len(stale), reason="another queue file")
            for path in stale:
                path.unlink()
        owner.write_text(queue_id + "\n")
        found, unreadable, top = list[Capture](), 0, max((g for g, _ in marks.values()), default=0)
        for f in _files(directory):
            top = max(top, f.gen)
            gen, offset = marks.get(f.device, (-1, 0))
            start = offset if f.gen == gen else 0
            data = b"" if f.gen < gen else f.path.read_bytes()
            data = data[start : len(data) if (end := data.find(b"\0")) < 0 else end]
            if not data.strip():
                f.path.unlink()
                continue
            for line in data.splitlines(keepends=True):
                start += len(line)
                try:
                    found.append(decode(line, (f.gen, start)))
                except (ValueError, KeyError, TypeError):
                    unreadable += 1
        if found or unreadable:
            log.warning("journal_recovered", readings=len(found), unreadable=unreadable)
        return cls(directory, top + 1), found

    def append(self, cap: Capture) -> Capture:
        """Journal ``cap`` (its device thread); returns it with its mark (unmarked on failure)."""
        lock = self._locks.get(cap.device) or self._locks.setdefault(cap.device, threading.Lock())
        with lock:  # one per device: two workers of one device overlap only across a reload
            try:
                line = encode(cap)
                seg = self._open.get(cap.device)
                if seg is None or seg.used + len(line) > self.ROTATE_BYTES:
                    seg = self._new_segment(cap.device, seg)
                seg.mm[seg.used : seg.used + len(line)] = line
            except Exception as err:  # never the reason a capture is lost: on, unjournaled
                return self._failed(cap, err)
            seg.used += len(line)
            mark = (seg.gen, seg.used)
        return Capture(cap.device, cap.decoded, cap.wall_ns, cap.mono_ns, mark)

    def _new_segment(self, device: str, old: _Segment | None) -> _Segment:
        """A new generation for ``device`` (every open is one: marks never go back)."""
        if old is not None:
            del self._open[device]
            old.close()
        gen = self._gen[device] = self._gen.get(device, self._first_gen - 1) + 1
        seg = self._open[device] = _Segment(
            self.dir / f"{device}.{gen}.jsonl", gen, self.ROTATE_BYTES
        )
        return seg

    def _failed(self, cap: Capture, err: Exception) -> Capture:
        self.failed += 1
        if self.failed == 1:
            log.error("journal_append_failed", device=cap.device, error=str(err), dir=str(self.dir))
        return cap

    def committed(self, marks: Mapping[str, Mark]) -> None:
        """A commit stored these marks (writer thread): delete the generations they passed."""
        for device, (gen, _) in marks.items():
            if gen > self._pruned.get(device, 0):
                self._pruned[device] = gen
                for f in _files(self.dir):
                    if f.device == device and f.gen < gen:
                        f.path.unlink(missing_ok=True)

    def close(self) -> None:
        """Close the open files (at stop; an append after it begins a new generation)."""
        for device, seg in list(self._open.items()):
            with self._locks[device]:
                del self._open[device]
                seg.close()
