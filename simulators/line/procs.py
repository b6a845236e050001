"""Lines' device simulators and their ``drive`` in child processes (fleet-scale timing).

One Python process driving many lines' simulators falls behind under the GIL (a reading
reaching the wire a good part of the station window late no longer matches the truth), so
:mod:`simulators.fleet_lines` runs them in children, ``lines_per_proc`` lines each.

Protocol (JSON lines; the child's protocol channel is its original stdout, its ``sys.stdout``
goes to stderr)::

    parent: python -m simulators.line.procs SPEC.json     (lines: name, dir, LineConfig)
    child:  {"ready": {name: agent TOML}}                 simulators started, ports served
    parent: {"go": wall_s, "offsets": {name: s}}          drive each line from wall_s + offset
    child:  {"done": {name: {written, by_id, slips}}}     every reading handed on
    parent: closes stdin                                   child stops its simulators, exits

:class:`LineProcs` is the parent's side: every wait has a timeout, and a child that exits or
says nothing in time raises :class:`LineProcError` (with the tail of its log).
LineSim is deterministic from its config, so the parent rebuilds each line's truth itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from simulators.line.devices import LineDevices, line_devices
from simulators.line.model import LineConfig
from simulators.line.run import drive
from simulators.line.sim import LineSim

ROOT = Path(__file__).resolve().parent.parent.parent

#: ``(wall time, kind, value)`` per reading a device wrote (:attr:`LineDevices.written`).
Written = dict[str, list[tuple[float, str, str | float | None]]]


class LineProcError(RuntimeError):
    """A line process exited, or did not answer in time."""


@dataclass
class LineResult:
    """What the comparison needs from a line's child, after ``drive``."""

    written: Written
    by_id: dict[str, dict[str, Any]]
    #: How late (ms) each reading reached its device simulator.
    slips: list[float]


def config_to_json(cfg: LineConfig) -> dict[str, Any]:
    return asdict(cfg)


def config_from_json(d: dict[str, Any]) -> LineConfig:
    return LineConfig(**{**d, "node": tuple(d["node"])})


# ---- child ---------------------------------------------------------------------------------
def _send(out: IO[str], msg: dict[str, Any]) -> None:
    out.write(json.dumps(msg) + "\n")
    out.flush()


def child(spec: Path) -> int:
    """The child: start the lines of ``spec``, report ready, drive on go, report, stop on EOF."""
    proto = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # anything printed goes to the log, not into the protocol
    lines = json.loads(spec.read_text())["lines"]
    devs: dict[str, tuple[LineSim, LineDevices]] = {}
    try:
        for ln in lines:
            cfg = config_from_json(ln["cfg"])
            dev = line_devices(cfg, Path(ln["dir"]))
            dev.start()
            devs[ln["name"]] = (LineSim(cfg), dev)
        _send(proto, {"ready": {name: dev.agent_toml() for name, (_, dev) in devs.items()}})
        cmd = sys.stdin.readline()
        if not cmd:
            return 1  # the parent gave up before go
        go = json.loads(cmd)
        slips: dict[str, list[float]] = {name: [] for name in devs}

        errors: list[str] = []

        def one(name: str) -> None:
            sim, dev = devs[name]
            delay = go["go"] + go["offsets"].get(name, 0.0) - time.time()
            if delay > 0:
                time.sleep(delay)
            try:
                drive(dev.telegrams(sim.readings()), dev.sinks, slips=slips[name])
            except Exception:
                errors.append(f"{name}: {traceback.format_exc()}")

        threads = [threading.Thread(target=one, args=(name,), daemon=True) for name in devs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            _send(proto, {"failed": errors})
            return 1
        done = {
            name: {"written": dev.written, "by_id": dev.by_id, "slips": slips[name]}
            for name, (_, dev) in devs.items()
        }
        _send(proto, {"done": done})
        sys.stdin.read()  # serve the ports until the parent is finished with the agents
        return 0
    finally:
        for _, dev in devs.values():
            with contextlib.suppress(OSError):
                dev.stop()


# ---- parent --------------------------------------------------------------------------------
class LineProcs:
    """A child process serving some lines (the parent's side).

    Args:
        lines: ``(name, directory, config)`` per line.
        spec: where to write the child's spec (JSON).
        log: the child's stderr.
    """

    def __init__(self, lines: list[tuple[str, Path, LineConfig]], spec: Path, log: Path) -> None:
        self.names = [name for name, _, _ in lines]
        self.log = log
        spec.write_text(json.dumps({"lines": [
            {"name": n, "dir": str(d), "cfg": config_to_json(c)} for n, d, c in lines
        ]}))  # fmt: skip
        with log.open("ab") as f:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "simulators.line.procs", str(spec)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=f,
                cwd=ROOT,
                text=True,
            )
        self._q: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with self.proc.stdout:
            for x in self.proc.stdout:
                self._q.put(x)
        self._q.put(None)

    def _fail(self, why: str) -> LineProcError:
        tail = self.log.read_text(errors="replace")[-2000:]
        return LineProcError(f"line process {self.names[0]}..{self.names[-1]}: {why}\n{tail}")

    def expect(self, key: str, timeout: float) -> Any:
        """The child's next message ``{key: ...}``'s value (:class:`LineProcError` if none)."""
        try:
            x = self._q.get(timeout=timeout)
        except queue.Empty:
            why = f"no {key!r} within {timeout:g} s"
            raise self._fail(why) from None
        if x is None:
            why = f"exited ({self.proc.wait()}) before {key!r}"
            raise self._fail(why)
        msg = json.loads(x)
        if key not in msg:
            why = f"said {json.dumps(msg)[:2000]} instead of {key!r}"
            raise self._fail(why)
        return msg[key]

    def ready(self, timeout: float) -> dict[str, str]:
        """Each line's ``[devices.*]`` / ``[stations.*]`` TOML, once its simulators serve."""
        got: dict[str, str] = self.expect("ready", timeout)
        return got

    def go(self, wall_s: float, offsets: dict[str, float]) -> None:
        """Start driving at ``wall_s`` (``time.time()``) plus each line's offset."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps({"go": wall_s, "offsets": offsets}) + "\n")
            self.proc.stdin.flush()
        except OSError as e:
            why = f"go not delivered: {e}"
            raise self._fail(why) from None

    def done(self, timeout: float) -> dict[str, LineResult]:
        """Each line's result, once every reading is handed on."""
        got = self.expect("done", timeout)
        return {
            name: LineResult(
                {d: [(t, k, v) for t, k, v in w] for d, w in r["written"].items()},
                r["by_id"],
                r["slips"],
            )
            for name, r in got.items()
        }

    def stop(self, timeout: float = 10.0) -> None:
        """Close the child's stdin (it stops its simulators); kill it if it does not exit."""
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout)


if __name__ == "__main__":
    sys.exit(child(Path(sys.argv[1])))
