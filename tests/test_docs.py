"""The README and docs/ stay true to the tree: every file, module and name they point at exists,
and no draft marker is left in them."""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

ROOT = Path(__file__).parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
ROOMS = "world|model|train|eval|self_enhance|judge"  # illume_core's subpackages
# a path into the project's own folders, e.g. illume_core/model/sampling.py or benchmarks/t2i_probe.py
PATH = re.compile(r"(?<![\w/.])((?:illume_core|storage|tasks|flows|benchmarks|tests|scripts)/[\w/.-]*\w)")
# the same inside illume_core, as the docs' tables write it: `world/scenes.py`
ROOM_PATH = re.compile(rf"`((?:{ROOMS})/[\w/]*\w\.py)`")
# a dotted reference: illume_core.world.scenes.first_cell, or `world.scenes.first_cell`
MODULE = re.compile(r"(?<![\w.])(illume_core(?:\.\w+)+)")
ROOM_MODULE = re.compile(rf"`((?:{ROOMS})(?:\.\w+)+)`")
FILES = {"safetensors", "json", "py", "md", "parquet", "png"}  # `model.safetensors` is a file
# what a path that no longer exists may follow: a revision (`git show REV:path`) or "former"
HISTORICAL = re.compile(r"(:|former `?)$")
# words a draft leaves behind for numbers that were not in yet
DRAFT = re.compile(r"\b\w*PLACEHOLDER\w*\b|\bRUN\d+README\b|\bTODO: fill\b|\bXXX\b")


@cache
def _top_level_names(source: Path) -> frozenset[str]:
    """What a module defines or imports at its top level."""
    names: set[str] = set()
    for node in ast.parse(source.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    return frozenset(names)


def _module_exists(dotted: str) -> bool:
    """A module or package of the tree, or a name one defines (`pkg.module.name[.attribute]`)."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        base = ROOT.joinpath(*parts[:i])
        source = base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"
        if source.is_file():
            return i == len(parts) or parts[i] in _top_level_names(source)
    return False


def _missing(doc: Path) -> list[str]:
    text = doc.read_text(encoding="utf-8")
    out = [
        m.group(1)
        for m in PATH.finditer(text)
        if not (ROOT / m.group(1)).exists() and not HISTORICAL.search(text[max(0, m.start() - 8) : m.start()])
    ]
    out += [m.group(1) for m in ROOM_PATH.finditer(text) if not (ROOT / "illume_core" / m.group(1)).exists()]
    out += [m.group(1) for m in MODULE.finditer(text) if not _module_exists(m.group(1))]
    out += [
        m.group(1)
        for m in ROOM_MODULE.finditer(text)
        if m.group(1).rsplit(".", 1)[-1] not in FILES and not _module_exists("illume_core." + m.group(1))
    ]
    return [f"{doc.name}: {name}" for name in out]


def test_every_named_file_module_and_name_exists():
    assert [m for doc in DOCS for m in _missing(doc)] == []
    assert len(DOCS) >= 10  # the docs were found


def test_no_draft_marker_is_left():
    left = [f"{d.name}: {m.group(0)}" for d in DOCS for m in DRAFT.finditer(d.read_text(encoding="utf-8"))]
    assert left == []


def test_the_checks_catch_what_they_look_for(tmp_path):
    assert _module_exists("illume_core.world.scenes.first_cell")
    assert _module_exists("illume_core.world.scenes.Obj.box")  # an attribute of a defined name
    assert not _module_exists("illume_core.world.no_such_module")
    assert not _module_exists("illume_core.world.rules.evaluate")  # renamed to apply_rules
    # a name that only a docstring or comment mentions is not defined
    assert "reformat" not in _top_level_names(ROOT / "illume_core" / "self_enhance" / "reformat.py")
    doc = tmp_path / "doc.md"
    doc.write_text(
        "see `illume_core/gone.py`, `world/gone.py`, `train.loop.Gone`, `model.safetensors`; "
        "`git show main:illume_core/old.py`; the former `tasks/actors.py`"
    )
    assert _missing(doc) == [
        "doc.md: illume_core/gone.py",
        "doc.md: world/gone.py",
        "doc.md: train.loop.Gone",
    ]
    assert DRAFT.search("RUN9PLACEHOLDER") and DRAFT.search("RUN9README")
