"""The repository owns its documents: references point into ``docs/``, and what they name exists.

Code, config and test comments cite ``docs/protocols.md §3.4`` or ``docs/reliability.md T12``.
These tests fail when a file outside ``docs/`` still points at the unshipped research notes
(after a merge, the repoint script renames such references mechanically), when a
``docs/<file>`` named anywhere does not exist, or when a cited section or plan id is missing
from the document.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.harness import ROOT

DOCS = ROOT / "docs"
#: Not project sources: tool state, virtualenvs, build output, fuzz corpora (binary).
SKIP_DIRS = {".git", ".venv", "venv", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache",
             ".hypothesis", "build", "dist", "node_modules", "corpus", "results"}  # fmt: skip
SKIP_SUFFIXES = {".pyc", ".png", ".jpg", ".gz", ".db", ".sqlite", ".bin", ".whl"}
#: Written split so that this file does not match itself.
OLD_NOTES = re.compile(
    "|".join([r"PROTOCOLS\.md", r"RELIABILITY\.md", r"STYLE\.md", r"\.\./" + "shared"])
)
DOC_PATH = re.compile(r"(?<![\w/.-])docs/([A-Za-z0-9_-]+\.md)")
PROTOCOL_REF = re.compile(
    r"docs/protocols\.md`{0,2}[ ,]*(?:§|section )?((?:\d+(?:\.\d+)?[-, §]*)+)"
)
RELIABILITY_REF = re.compile(
    r"docs/reliability\.md`{0,2}'?s?[ ,]*((?:(?:\([a-f]\)|[A-Z]\d{1,2})[-, /]*)+)"
)


def project_files() -> list[Path]:
    """Every text file of the project outside ``docs/``."""
    out = []
    for path in ROOT.rglob("*"):
        rel = path.relative_to(ROOT)
        skipped = any(p in SKIP_DIRS or p.endswith(".egg-info") for p in rel.parts)
        if rel.parts[0] == "docs" or skipped:
            continue
        if path.is_file() and path.suffix not in SKIP_SUFFIXES and path.stat().st_size < 2_000_000:
            out.append(path)
    return out


def texts() -> list[tuple[str, str]]:
    return [(str(p.relative_to(ROOT)), p.read_text(errors="replace")) for p in project_files()]


@pytest.fixture(scope="module")
def sources() -> list[tuple[str, str]]:
    return texts()


def test_docs_are_there() -> None:
    for name in ("install.md", "protocols.md", "reliability.md", "backend.md"):
        assert (DOCS / name).is_file(), name


def test_nothing_points_at_the_unshipped_notes(sources: list[tuple[str, str]]) -> None:
    hits = [
        f"{name}:{n}: {line.strip()}"
        for name, text in sources
        for n, line in enumerate(text.splitlines(), 1)
        if OLD_NOTES.search(line)
    ]
    why = "cite docs/protocols.md or docs/reliability.md (same § / plan id) instead of:\n"
    assert not hits, why + "\n".join(hits)


def test_every_docs_path_named_exists(sources: list[tuple[str, str]]) -> None:
    named = {(m[1], name) for name, text in sources for m in DOC_PATH.finditer(text)}
    assert {doc for doc, _ in named} >= {"protocols.md", "reliability.md"}
    missing = sorted(f"{where}: docs/{doc}" for doc, where in named if not (DOCS / doc).is_file())
    assert not missing, missing


def _headings(doc: str) -> set[str]:
    return {m[1] for m in re.finditer(r"^#+ (\(?[\w.]+\)?)", (DOCS / doc).read_text(), re.M)}


def test_cited_protocol_sections_exist(sources: list[tuple[str, str]]) -> None:
    numbers = {h.rstrip(".") for h in _headings("protocols.md")}
    missing = set()
    for name, text in sources:
        for m in PROTOCOL_REF.finditer(text):
            for num in re.findall(r"\d+(?:\.\d+)?", m[1]):
                if num not in numbers:
                    missing.add(f"{name}: §{num}")
    assert not missing, sorted(missing)


def test_cited_reliability_ids_exist(sources: list[tuple[str, str]]) -> None:
    text_of_doc = (DOCS / "reliability.md").read_text()
    sections = {h for h in _headings("reliability.md") if h.startswith("(")}
    ids = set(re.findall(r"^\| ([A-Z]\d{1,2}) \|", text_of_doc, re.M))
    missing = set()
    for name, text in sources:
        for m in RELIABILITY_REF.finditer(text):
            for ref in re.findall(r"\([a-f]\)|[A-Z]\d{1,2}", m[1]):
                if ref not in (sections if ref.startswith("(") else ids):
                    missing.add(f"{name}: {ref}")
    assert not missing, sorted(missing)
