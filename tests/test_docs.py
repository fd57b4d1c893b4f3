"""The README and docs/ stay true to the tree: every file and module they name exists, and no
draft marker is left in them."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# a path into the project's own folders, e.g. illume_core/model/sampling.py or benchmarks/t2i_probe.py
PATH = re.compile(r"(?<![\w/.])((?:illume_core|storage|tasks|flows|benchmarks|tests|scripts)/[\w/.-]*\w)")
# a dotted module reference, e.g. illume_core.world.scenes.first_cell
MODULE = re.compile(r"(?<![\w.])(illume_core(?:\.\w+)+)")
# what a path that no longer exists may follow: a revision (`git show REV:path`) or "former"
HISTORICAL = re.compile(r"(:|former `?)$")
# words a draft leaves behind for numbers that were not in yet
DRAFT = re.compile(r"\b\w*PLACEHOLDER\w*\b|\bRUN\d+README\b|\bTODO: fill\b|\bXXX\b")


def _module_exists(dotted: str) -> bool:
    """A module or package of the tree, or a name one of them defines (`pkg.module.name`)."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        base = ROOT.joinpath(*parts[:i])
        source = base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"
        if source.is_file():
            if i == len(parts):
                return True
            return i == len(parts) - 1 and re.search(rf"\b{parts[-1]}\b", source.read_text()) is not None
    return False


def test_every_named_file_and_module_exists():
    missing = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for m in PATH.finditer(text):
            if not (ROOT / m.group(1)).exists() and not HISTORICAL.search(
                text[max(0, m.start() - 8) : m.start()]
            ):
                missing.append(f"{doc.name}: {m.group(1)}")
        missing += [
            f"{doc.name}: {m.group(1)}" for m in MODULE.finditer(text) if not _module_exists(m.group(1))
        ]
    assert missing == []
    assert len(DOCS) >= 10  # the docs were found


def test_no_draft_marker_is_left():
    left = [f"{d.name}: {m.group(0)}" for d in DOCS for m in DRAFT.finditer(d.read_text(encoding="utf-8"))]
    assert left == []


def test_the_checks_catch_what_they_look_for():
    assert not _module_exists("illume_core.world.no_such_module")
    assert _module_exists("illume_core.world.scenes.first_cell")
    assert PATH.search("see `illume_core/gone.py`").group(1) == "illume_core/gone.py"
    assert HISTORICAL.search("git show main:")
    assert DRAFT.search("RUN9PLACEHOLDER") and DRAFT.search("RUN9README")
