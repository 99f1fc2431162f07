"""Writing outputs so that a crash leaves the old version or the new one, never part of one.

A file or directory is written under a temporary sibling name, its bytes are fsynced, it is
renamed to its name, and the directory holding it is fsynced so the rename itself survives a
power cut. The trainer and the server write every output through these (the eraser store's
index and its staging areas included).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make a rename into `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_synced(path: Path, data: bytes) -> None:
    """Write and fsync, so that a rename published after it never exposes a short file."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _temporary(path: Path, kind: str) -> Path:
    return path.with_name(f".{path.name}.{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write `path`'s new content to (by any writer: torch.save, ...);
    once the block succeeds it is fsynced and renamed over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(path, "tmp")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_atomic(path: str | os.PathLike, data: str | bytes) -> Path:
    """Replace `path` with `data` (text as UTF-8): readers see the old file or the new one."""
    with atomic_file(path) as tmp:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)


def sync_tree(root: Path) -> None:
    """fsync every file under `root`, then every directory, deepest first."""
    for directory, _, files in os.walk(root, topdown=False):
        for name in files:
            with open(os.path.join(directory, name), "rb") as f:
                os.fsync(f.fileno())
        fsync_dir(Path(directory))


@contextmanager
def atomic_dir(out: str | os.PathLike, *, replace: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of `out` to fill; once the block succeeds its files are fsynced
    and it is renamed to `out`. With `replace`, an existing `out` is moved aside first and removed
    after; without, the rename fails on an existing non-empty `out`. A failed block leaves `out`
    as it was."""
    out = Path(out)
    tmp = _temporary(out, "tmp")
    tmp.mkdir(parents=True)
    try:
        yield tmp
        sync_tree(tmp)
        if replace and out.exists():
            old = _temporary(out, "old")
            os.rename(out, old)
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(out.parent)
