"""What the frame-writing simulators share: truth records, their thread, and chunked writes.

:class:`Emitter` is the base of the scale, serial-scanner, tunnel and HID simulators: every
record of what was written (the truth a test compares the agent's output with) is kept in
``truth`` and appended to an optional JSONL file; one background thread runs until
:meth:`Emitter.stop`. :func:`fragments` and :func:`write_all` are the ``fragment`` fault and
the write loop (a port that takes a chunk only in part is retried until a deadline).
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Generic, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")


class Emitter(Generic[T]):
    """Truth records (``truth``, optionally a JSONL file) and one thread, stopped by :meth:`stop`.

    Args:
        truth_file: optional JSONL file receiving every record, appended to.
    """

    #: How long :meth:`stop` waits for the thread, s.
    JOIN_S: ClassVar[float] = 5.0

    def __init__(self, truth_file: Path | None = None) -> None:
        self.truth: list[T] = []
        self._truth_file = truth_file.open("a", encoding="utf-8") if truth_file else None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def record(self, t: T) -> None:
        """Keep ``t`` (and append it to the truth file)."""
        self.truth.append(t)
        if self._truth_file:
            self._truth_file.write(json.dumps(asdict(t)) + "\n")
            self._truth_file.flush()

    def wait(self, timeout: float | None = None) -> None:
        """Wait for the thread (a ``count``-limited run) to finish."""
        if self._thread:
            self._thread.join(timeout)

    def stop(self) -> None:
        """Stop the thread (the port stays plugged) and close the truth file."""
        self._stop.set()
        self.wait(self.JOIN_S)
        if self._truth_file:
            self._truth_file.close()
            self._truth_file = None


def fragments(rng: random.Random, data: bytes, fragment: bool) -> list[bytes]:
    """``data`` whole, or (``fragment``) cut at up to 4 random places."""
    if not fragment or len(data) <= 1:
        return [data]
    cuts = sorted(rng.sample(range(1, len(data)), min(4, len(data) - 1)))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def write_all(
    write: Callable[[bytes], int],
    chunks: Sequence[bytes],
    deadline: float,
    gap: Callable[[], float],
    give_up: Callable[[], bool] = lambda: False,
) -> bool:
    """Write ``chunks`` in order, ``gap()`` s apart; the rest of a chunk written in part is
    retried every 2 ms. False once past ``deadline`` (monotonic) or ``give_up()`` with bytes
    left."""
    for i, chunk in enumerate(chunks):
        if i:
            time.sleep(gap())
        rest = chunk
        while rest:
            rest = rest[write(rest) :]
            if rest and (time.monotonic() > deadline or give_up()):
                return False
            if rest:
                time.sleep(0.002)
    return True
