"""Reject reasons are a closed set, declared per driver and documented in docs/drivers.md."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import structlog

from drivers import DRIVERS, driver_class
from drivers.reasons import BASE, FRAMING, RejectReason
from drivers.virtual import VirtualConfig, VirtualDriver
from edge_agent.errors import FrameError
from edge_agent.reading import Decoded

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "drivers.md"
ROW = re.compile(r"^\| `(\w+)` \| (.*) \|$")


def doc_rows(heading: str) -> dict[str, str]:
    """The ``| `key` | text |`` rows of the table under ``heading`` in docs/drivers.md."""
    text = DOC.read_text()
    section = text.split(heading, 1)[1].split("\n#", 1)[0]
    return {m[1]: m[2] for line in section.splitlines() if (m := ROW.match(line))}


def reasons_cell(reasons: frozenset[RejectReason]) -> str:
    return ", ".join(f"`{r}`" for r in sorted(reasons))


def test_doc_table_matches_every_drivers_declaration() -> None:
    rows = doc_rows("## Reject reasons per driver")
    expected = {kind: reasons_cell(driver_class(kind).REJECTS) for kind in DRIVERS}
    wrong = {k: v for k, v in expected.items() if rows.get(k) != v}
    table = "\n".join(f"| `{k}` | {v} |" for k, v in sorted(expected.items()))
    assert not wrong and set(rows) == set(expected), (
        f"docs/drivers.md 'Reject reasons per driver' differs from the drivers' REJECTS; "
        f"the table should read:\n{table}"
    )
    assert set(doc_rows("## Reasons every driver has")) == {r.value for r in BASE}


def test_every_reason_is_explained_and_produced_somewhere() -> None:
    meanings = doc_rows("## What each reason means")
    assert set(meanings) == {r.value for r in RejectReason}, "one row per RejectReason member"
    produced = set(BASE).union(*(driver_class(kind).REJECTS for kind in DRIVERS))
    assert set(RejectReason) - produced == set(), "a member no driver declares: remove it"


def test_stream_drivers_declare_the_framing_reasons() -> None:
    from drivers.common.stream import StreamDriver

    for kind in DRIVERS:
        cls = driver_class(kind)
        if issubclass(cls, StreamDriver):
            assert FRAMING <= cls.REJECTS, f"{kind}: a Framer rejects {sorted(FRAMING)}"


def test_no_reason_string_literals_in_drivers() -> None:
    """Drivers name reasons by member (``R.GARBLED``), never by a string the enum lacks."""
    calls = ("FrameError", "Reject", "_reject", "_failure")
    found = []
    for path in (ROOT / "drivers").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and node.args:
                name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
                literals = [  # also inside ``R.GARBLED if text else "empty"``
                    n.value
                    for n in ast.walk(node.args[0])
                    if isinstance(n, ast.Constant) and isinstance(n.value, str)
                ]
                if name in calls and literals:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {literals}")
    assert not found, found


class Sloppy(VirtualDriver):
    """A driver whose parser gives a reason it did not declare."""

    def decode(self, frame: bytes) -> list[Decoded]:
        if frame == b"bad":
            raise FrameError("made_up", "not in the enum")
        if frame == b"undeclared":
            raise FrameError(RejectReason.CRC, "a member, but not declared by this driver")
        return super().decode(frame)


@pytest.mark.parametrize("frame", [b"bad", b"undeclared"])
def test_undeclared_reason_is_counted_as_parser_error_and_logged(frame: bytes) -> None:
    drv = Sloppy("v", VirtualConfig(type="virtual", channel="sloppy"))
    seen: list[str] = []
    drv.on_reject = lambda _dev, reason, _data: seen.append(reason)
    with structlog.testing.capture_logs() as logs:
        assert drv._take(frame) == []
        assert drv._take(b"!x") == []  # a declared one passes through unchanged
    assert dict(drv.rejects) == {"parser_error": 1, "garbled": 1}
    assert seen == ["parser_error", "garbled"] and all(type(r) is str for r in seen)
    undeclared = [e for e in logs if e["event"] == "undeclared_reject"]
    assert len(undeclared) == 1 and undeclared[0]["log_level"] == "error"


def test_published_strings_are_the_plain_values() -> None:
    drv = VirtualDriver("v", VirtualConfig(type="virtual", channel="plain"))
    drv._take(b"!x")
    (key,) = drv.rejects
    assert type(key) is str and key == "garbled"
