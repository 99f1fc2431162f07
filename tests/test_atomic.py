"""eraser_store.atomic: the one way outputs are written (temporary sibling, fsync, rename)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from eraser_store.atomic import atomic_dir, atomic_file, write_atomic

ROOT = Path(__file__).resolve().parents[1]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = write_atomic(tmp_path / "a" / "x.json", "old")
    with pytest.raises(RuntimeError), atomic_file(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError
    assert path.read_text() == "old" and sorted(p.name for p in path.parent.iterdir()) == ["x.json"]
    write_atomic(path, b"new")
    assert path.read_text() == "new"


def test_a_directory_appears_whole_or_not_at_all(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError), atomic_dir(out) as tmp:
        (tmp / "a").write_text("1")
        raise RuntimeError
    assert list(tmp_path.iterdir()) == []
    with atomic_dir(out) as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "a").write_text("1")
    with pytest.raises(OSError), atomic_dir(out) as tmp:  # not replacing a full directory
        (tmp / "b").write_text("2")
    with atomic_dir(out, replace=True) as tmp:
        (tmp / "b").write_text("2")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert [p.name for p in out.iterdir()] == ["b"]


def test_the_packages_rename_only_through_the_helper():
    # The store keeps its own staging (its crash tests pin each step); everything else writes
    # through eraser_store.atomic.
    allowed = {"eraser_store/atomic.py", "eraser_store/store.py"}
    renames = re.compile(r"os\.replace\(|os\.rename\(|\.rename\(|\.replace\(tmp|mkstemp\(")
    found = [
        str(path.relative_to(ROOT))
        for package in ("training", "eraser_store", "server", "sft_eraser")
        for path in sorted((ROOT / package).rglob("*.py"))
        if str(path.relative_to(ROOT)) not in allowed and renames.search(path.read_text())
    ]
    assert found == []
