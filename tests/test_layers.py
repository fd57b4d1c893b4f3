"""The layers point one way (docs/ARCHITECTURE.md): read every module's imports, nested ones too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
# package -> the top-level names its modules may not import
FORBIDDEN = {
    "illume_core": {"prefect", "ray", "tasks", "flows", "storage"},
    "storage": {"prefect", "ray", "tasks", "flows", "illume_core"},
    "tasks": {"flows"},
}


def imported(path: Path) -> set[str]:
    """Top-level names of every module `path` imports, at any depth of the file."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_lower_layer_imports_nothing_above_it(package):
    bad = {
        str(f.relative_to(ROOT)): sorted(imported(f) & FORBIDDEN[package])
        for f in sorted((ROOT / package).rglob("*.py"))
    }
    assert {f: names for f, names in bad.items() if names} == {}
    assert len(bad) >= 4  # the package's modules were read


def test_the_reader_sees_nested_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("import os\n\ndef g():\n    from prefect import flow\n    import ray.util\n")
    assert imported(f) == {"os", "prefect", "ray"}
