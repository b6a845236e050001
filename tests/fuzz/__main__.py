"""Atheris entry point: ``python -m tests.fuzz TARGET [--runs N]`` (``--list`` names them).

Coverage-guided fuzzing of one target from :mod:`tests.fuzz.targets` (every driver's read path,
``modbus_scale``, ``config``, ``waybill``), with the drivers and ``edge_agent`` instrumented.
Needs the ``fuzz`` extra (``pip install -e '.[fuzz]'``, atheris >= 2.3, CPython 3.11-3.13).
A crash writes its input to ``tests/fuzz/corpus/<target>/crash-<sha1>``, which
``tests/faults/test_fuzz.py::test_corpus_replays`` replays in every CI run; keep the file in
the commit that fixes the bug. Extra arguments go to libFuzzer (e.g. ``-max_total_time=600``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

CORPUS = Path(__file__).parent / "corpus"


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, instrument, fuzz (libFuzzer exits the process when done or on a crash)."""
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__)
    parser.add_argument("target", nargs="?", help="target name (see --list)")
    parser.add_argument("--runs", type=int, default=100_000, help="inputs to run (default 100000)")
    parser.add_argument("--max-len", type=int, default=4096, help="longest input, bytes")
    parser.add_argument("--list", action="store_true", help="print the target names and exit")
    args, libfuzzer = parser.parse_known_args(argv)

    import atheris

    with atheris.instrument_imports(include=["drivers", "edge_agent", "tests.fuzz.targets"]):
        from tests.fuzz import targets

    if args.list or args.target not in targets.ALL:
        print("\n".join(sorted(targets.ALL)))
        return 0 if args.list else 2
    run = targets.ALL[args.target]

    def one_input(data: bytes) -> None:
        index, chunks = targets.decode(data)
        run(index, chunks)

    crashes = CORPUS / args.target
    crashes.mkdir(parents=True, exist_ok=True)
    atheris.Setup(
        [sys.argv[0], f"-runs={args.runs}", f"-max_len={args.max_len}",
         f"-artifact_prefix={crashes}/", "-print_final_stats=1", *libfuzzer],
        one_input,
    )  # fmt: skip
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
