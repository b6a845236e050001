"""The capture journal: a reading taken off a port survives a crash of the process (kill -9).

Between the read and its commit a capture lives in RAM for up to ``[queue] gather_ms`` plus
one commit (~3 ms at line rate); a process killed then took it along, a reading lost with no
trace. So each device thread appends every capture to its own journal file, one ``write(2)``
and no fsync, before it hands the capture to the writer: the kernel keeps the bytes whatever
happens to the process. (A power cut can take them as it takes the page cache; a committed row
is fsynced by SQLite.) Each commit stores, in the same transaction, how far into each device's
journal it has committed (``journal_mark``: generation and byte offset). The next start reads
what lies past the marks and hands those captures to the writer first: each one is committed
exactly once, with the clocks it was read with.

Files: ``<queue file>.captures/<device>.<generation>.jsonl``, one JSON object per line. A
device starts a new generation past ``ROTATE_BYTES``; a commit whose mark is in a newer
generation deletes the older ones. A line that does not parse (a torn tail after a power cut,
a full disk) is skipped and counted. A failed append is logged once and counted; the capture
goes on to the writer all the same (it is then as safe as before the journal).
"""

from __future__ import annotations

import base64
import json
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

_OPTIONAL = ("unit", "symbology", "aim", "check", "stable", "gate", "channel")


def journal_dir(queue_path: Path) -> Path:
    """Where the journal of the queue at ``queue_path`` lives."""
    return queue_path.with_name(queue_path.name + ".captures")


def encode(cap: Capture) -> bytes:
    """One journal line."""
    d = cap.decoded
    rec: dict[str, object] = {"dev": cap.device, "w": cap.wall_ns, "m": cap.mono_ns}
    rec |= {"k": d.kind.value, "v": d.value, "r": base64.b64encode(d.raw).decode()}
    rec |= {k: v for k in _OPTIONAL if (v := getattr(d, k)) is not None}
    return json.dumps(rec, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes, mark: Mark) -> Capture:
    """A capture from one journal line. Raises ValueError (also KeyError, TypeError)."""
    rec = json.loads(line)
    extra = {k: rec[k] for k in _OPTIONAL if k in rec}
    decoded = Decoded(Kind(rec["k"]), rec["v"], base64.b64decode(rec["r"]), **extra)
    return Capture(str(rec["dev"]), decoded, int(rec["w"]), int(rec["m"]), mark)


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


class Journal:
    """The device threads' appender (one open file per device) and the writer's pruning.

    Args:
        directory: the journal directory (created).
        first_gen: the generation new files start at (above every one in use).
    """

    #: A device's file is closed and a new generation begun past this size (bytes).
    ROTATE_BYTES = 4 << 20

    def __init__(self, directory: Path, first_gen: int) -> None:
        directory.mkdir(mode=0o750, exist_ok=True)
        self.dir = directory
        self._first_gen = first_gen
        self._open: dict[str, tuple[int, int]] = {}  # device -> fd, size of its current file
        self._gen: dict[str, int] = {}  # device -> its current (last opened) generation
        self._lock = threading.Lock()
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
            data = b"" if f.gen < gen else f.path.read_bytes()[offset if f.gen == gen else 0 :]
            if not data.strip():
                f.path.unlink()
                continue
            start = offset if f.gen == gen else 0
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
        line = encode(cap)
        with self._lock:
            try:
                fd, size = self._open.get(cap.device) or self._new_file(cap.device)
                if size and size + len(line) > self.ROTATE_BYTES:
                    del self._open[cap.device]
                    os.close(fd)
                    fd, size = self._new_file(cap.device)
                written = os.write(fd, line)
            except OSError as err:
                return self._failed(cap, err)
            size += written
            self._open[cap.device] = (fd, size)
            gen = self._gen[cap.device]
        if written != len(line):
            return self._failed(cap, OSError("short write"))
        return Capture(cap.device, cap.decoded, cap.wall_ns, cap.mono_ns, (gen, size))

    def _new_file(self, device: str) -> tuple[int, int]:
        """A new generation for ``device`` (every open is one: marks never go back)."""
        gen = self._gen[device] = self._gen.get(device, self._first_gen - 1) + 1
        path = self.dir / f"{device}.{gen}.jsonl"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
        self._open[device] = (fd, os.fstat(fd).st_size)
        return self._open[device]

    def _failed(self, cap: Capture, err: OSError) -> Capture:
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
        with self._lock:
            fds, self._open = list(self._open.values()), {}
        for fd, _ in fds:
            os.close(fd)
