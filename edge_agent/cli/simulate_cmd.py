"""``simulate``: start one of the device simulators (``simulators/``) by name."""

from __future__ import annotations

import argparse
import ast
import importlib
import re
import sys
from pathlib import Path

from edge_agent.cli.common import CommandError

#: A "(... §3.2)" pointer to the protocol notes in a simulator's docstring: not for the listing.
_REFERENCE = re.compile(r"\s*\([^)]*§[^)]*\)")


def simulators() -> dict[str, str]:
    """The runnable simulators: name -> the first line of its docstring (read, not imported)."""
    import simulators as pkg  # noqa: PLC0415 - only this command needs the package

    root = Path(pkg.__file__).parent
    out: dict[str, str] = {}
    for path in sorted(root.iterdir()):
        if path.name.startswith("_"):
            continue
        if path.is_dir() and (path / "__main__.py").is_file():
            source = path / "__init__.py"
        elif path.is_file() and path.suffix == ".py" and "\ndef main(" in path.read_text():
            source = path
        elif path.is_dir() and "\ndef main(" in (path / "__init__.py").read_text():
            source = path / "__init__.py"
        else:
            continue  # shared parts (pty_port, tunnel) and the broker, not device simulators
        doc = ast.get_docstring(ast.parse(source.read_text())) or ""
        first = doc.splitlines()[0] if doc else ""
        out[path.stem] = _REFERENCE.sub("", first).replace("``", "")
    return out


def cmd_simulate(args: argparse.Namespace) -> int:
    """Run ``simulators.<name>.main``; without a name, list the simulators."""
    found = simulators()
    if args.name is None:
        width = max(map(len, found))
        for name, what in found.items():
            print(f"{name:{width}}  {what}")
        print("\nedge-agent simulate NAME --help: its options")
        return 0
    if args.name not in found:
        msg = f"no simulator {args.name!r}; edge-agent simulate lists them"
        raise CommandError(msg)
    module = importlib.import_module(f"simulators.{args.name}")
    if not hasattr(module, "main"):
        module = importlib.import_module(f"simulators.{args.name}.__main__")
    code: int = module.main(args.args)
    sys.stdout.flush()
    return code
