"""The one-way imports the layout promises: the server and the eraser store never import the
training code (the server image ships without it), and only `sft_eraser` joins the halves."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("server", "eraser_store", "training", "sft_eraser")
MAY_IMPORT = {
    "server": {"server", "eraser_store"},
    "eraser_store": {"eraser_store"},
    "training": {"training", "eraser_store"},
    "sft_eraser": set(PACKAGES),
}


def imported_packages(path: Path) -> set[str]:
    """The project's packages a module imports, at any depth (lazy imports in functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found |= {n.split(".")[0] for n in names} & set(PACKAGES)
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_go_one_way(package):
    wrong = {
        str(path.relative_to(ROOT)): sorted(imported_packages(path) - MAY_IMPORT[package])
        for path in sorted((ROOT / package).rglob("*.py"))
    }
    assert {k: v for k, v in wrong.items() if v} == {}
