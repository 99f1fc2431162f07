"""The eraser registry: a local directory of versioned erasers with an SQLite index.

    root/index.sqlite               one row per registered version: what exists is what has a row
    root/objects/<name>/<version>/  an eraser directory (format.py), never changed once registered
    root/tmp/                       staging for adds, and uploads received by a server

An add copies the eraser into tmp/, verifies the copy, then, holding the write lock, renames it
into objects/ and commits its row. Readers only follow rows, so they never see half an eraser; a
crash leaves at worst files without a row, which `verify` reports and `gc` removes.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from eraser_store.atomic import fsync_dir, write_synced
from eraser_store.format import (
    FILES,
    NAME_PATTERN,
    NAME_RE,
    NAME_RULE,
    CarrierRef,
    Eraser,
    EraserFormatError,
    read_eraser,
)

# How long a writer waits for another process's write transaction before giving up.
LOCK_TIMEOUT_S = 60.0
# tmp/ entries named upload-<pid>-<hex> belong to that process while it runs.
UPLOAD_RE = re.compile(r"upload-(?P<pid>[0-9]+)-[0-9a-f]+")
REF_RE = re.compile(rf"(?P<name>{NAME_PATTERN})(?:@(?P<version>[1-9][0-9]*))?")
COLUMNS = "name, version, behavior, tokens, hidden_size, sha256, carrier_fingerprint, created"
SCHEMA = (
    """CREATE TABLE IF NOT EXISTS erasers (
        name TEXT NOT NULL,
        version INTEGER NOT NULL,
        behavior TEXT NOT NULL,
        tokens INTEGER NOT NULL,
        hidden_size INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        carrier_fingerprint TEXT NOT NULL,
        created TEXT NOT NULL,
        PRIMARY KEY (name, version)
    )""",
    # Highest version ever given to a name. Versions are never reused, even after a remove, so
    # `name@3` always means the same bytes and a removed version's files can be deleted after
    # the commit without racing a new add to the same path.
    """CREATE TABLE IF NOT EXISTS last_version (
        name TEXT PRIMARY KEY,
        version INTEGER NOT NULL
    )""",
)


class EraserStoreError(ValueError):
    """A store operation that cannot be done; the message names the eraser."""


class EraserNotFound(EraserStoreError):
    pass


class EraserRefused(EraserStoreError):
    """The eraser does not fit the store's carrier."""


class EraserCorrupted(EraserStoreError):
    """A registered eraser whose files are missing or no longer match the index."""


@dataclass(frozen=True)
class EraserRecord:
    name: str
    version: int
    behavior: str
    tokens: int  # num_virtual_tokens
    hidden_size: int
    sha256: str
    carrier_fingerprint: str
    created: str  # the eraser's own creation time (its sidecar)
    path: Path | None  # its directory; None where the bytes live in a database

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


@dataclass(frozen=True)
class CarrierMismatch:
    reason: str
    overridable: bool  # a fingerprint mismatch can be forced; a hidden-size mismatch cannot


def parse_ref(ref: str) -> tuple[str, int | None]:
    """`name@3` -> ("name", 3); `name` -> ("name", None)."""
    m = REF_RE.fullmatch(ref) if isinstance(ref, str) else None
    if m is None:
        raise EraserStoreError(f"bad eraser reference {ref!r} (expected NAME or NAME@VERSION)")
    version = m.group("version")
    return m.group("name"), None if version is None else int(version)


class StoreBase(ABC):
    """What every back end shares: lookups by version, the carrier check and an add's checks.
    A back end sets `carrier` and `location` (named in messages) and provides `list`,
    `_records_of` and `_load`."""

    carrier: CarrierRef | None
    location: str

    def record(self, name: str, version: int | None = None) -> EraserRecord:
        """The latest version of `name`, or the given one."""
        records = self._versions_of(name)
        if version is None:
            return records[-1]
        for rec in records:
            if rec.version == version:
                return rec
        have = ", ".join(str(r.version) for r in records)
        raise EraserNotFound(f"no eraser {name}@{version} in {self.location}; versions: {have}")

    def get(self, name: str, version: int | None = None) -> Eraser:
        """Load an eraser, re-checking its bytes against the index."""
        return self._load(self.record(name, version))

    def versions(self, name: str) -> list[int]:
        return [r.version for r in self._versions_of(name)]

    def carrier_mismatch(
        self, hidden_size: int, carrier_fingerprint: str, tokens: int
    ) -> CarrierMismatch | None:
        """Why an eraser does not fit this store's carrier; None if it does or no carrier is set."""
        if self.carrier is None:
            return None
        want = self.carrier.hidden_size
        if hidden_size != want:
            return CarrierMismatch(
                f"hidden size {hidden_size} does not match the carrier's {want}", overridable=False
            )
        context = self.carrier.max_positions
        # A request needs at least one prompt and one generated token after the eraser.
        if context is not None and tokens + 2 > context:
            return CarrierMismatch(
                f"{tokens} virtual tokens leave no room for a prompt and a reply in the "
                f"carrier's context of {context} positions",
                overridable=False,
            )
        if carrier_fingerprint != self.carrier.fingerprint:
            return CarrierMismatch(
                f"trained against carrier {carrier_fingerprint}, not {self.carrier.fingerprint}",
                overridable=True,
            )
        return None

    @abstractmethod
    def list(self, all_versions: bool = False) -> list[EraserRecord]:
        """The latest version of each name (every version with all_versions), by name."""

    @abstractmethod
    def _records_of(self, name: str) -> list[EraserRecord]:
        """Every version of `name`, oldest first; [] if none."""

    @abstractmethod
    def _load(self, rec: EraserRecord) -> Eraser:
        """The eraser of `rec`, its bytes re-checked against the index (EraserCorrupted)."""

    def _admit(self, eraser: Eraser, src: object, name: str | None, force: bool) -> str:
        """The store name `eraser` (read from `src`) is added under; raises if it may not be."""
        meta = eraser.meta
        name = meta.name if name is None else name
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            raise EraserStoreError(f"bad eraser name {name!r} ({NAME_RULE})")
        mismatch = self.carrier_mismatch(
            meta.hidden_size, meta.carrier_fingerprint, meta.num_virtual_tokens
        )
        if mismatch is not None and not (mismatch.overridable and force):
            hint = "; pass force=True (CLI: --force) to register it anyway"
            raise EraserRefused(
                f"eraser {name!r} ({src}) refused: {mismatch.reason}"
                + (hint if mismatch.overridable else "")
            )
        return name

    def _problems(self, records: list[EraserRecord]) -> list[str]:
        """One line per record whose bytes are damaged or that does not fit the carrier."""
        problems = []
        for rec in records:
            try:
                self._load(rec)
            except EraserCorrupted as e:
                problems.append(str(e))
            mismatch = self.carrier_mismatch(rec.hidden_size, rec.carrier_fingerprint, rec.tokens)
            if mismatch is not None:
                problems.append(f"{rec.ref}: {mismatch.reason}")
        return problems

    def _versions_of(self, name: str) -> list[EraserRecord]:
        records = self._records_of(name)
        if not records:
            known = ", ".join(r.name for r in self.list()) or "none"
            raise EraserNotFound(f"no eraser named {name!r} in {self.location}; known: {known}")
        return records


class EraserStore(StoreBase):
    def __init__(self, root: str | os.PathLike, carrier: CarrierRef | None = None):
        self.root = Path(root).absolute()  # record paths stay valid if the cwd changes
        self.location = str(self.root)
        self.carrier = carrier
        self.objects = self.root / "objects"
        self.tmp = self.root / "tmp"
        self.index = self.root / "index.sqlite"
        try:
            self.objects.mkdir(parents=True, exist_ok=True)
            self.tmp.mkdir(exist_ok=True)
            with self._connect() as db:
                # WAL: readers (a serving process) never wait for a writer, nor block its commit.
                if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    db.execute("PRAGMA journal_mode=WAL")
            with self._write() as db:
                for statement in SCHEMA:
                    db.execute(statement)
        except (OSError, sqlite3.Error) as e:
            # A read-only or foreign-owned mount (a container's volume) is a setting to fix.
            raise EraserStoreError(f"cannot open the eraser store {self.root}: {e}") from e

    # ---- reading

    def list(self, all_versions: bool = False) -> list[EraserRecord]:
        """The latest version of each name (every version with all_versions), by name."""
        latest = (
            "WHERE version = (SELECT MAX(version) FROM erasers AS e WHERE e.name = erasers.name)"
        )
        return self._select(f"{'' if all_versions else latest} ORDER BY name, version", ())

    # ---- writing

    def add_files(
        self, files: Mapping[str, bytes], *, name: str | None = None, force: bool = False
    ) -> EraserRecord:
        """Register an eraser received as the bytes of its files (an upload). They are staged
        inside the store, where a process killed meanwhile leaves them for `gc` or `clean_tmp`;
        messages name the eraser "upload", not the staging directory."""
        with self.upload_dir() as staging:
            for file_name in FILES:
                write_synced(staging / file_name, files[file_name])
            try:
                return self.add(staging, name=name, force=force)
            except (EraserFormatError, EraserStoreError) as e:
                raise type(e)(str(e).replace(str(staging), "upload")) from None

    @contextmanager
    def upload_dir(self) -> Iterator[Path]:
        """An empty directory inside tmp/, removed on exit (see add_files)."""
        path = self.tmp / f"upload-{os.getpid()}-{uuid.uuid4().hex}"
        path.mkdir()
        try:
            yield path
        finally:
            _remove(path)

    def add(
        self, src_dir: str | os.PathLike, *, name: str | None = None, force: bool = False
    ) -> EraserRecord:
        """Register the eraser at `src_dir` as the next version of `name` (default: its own).

        The eraser's files are stored byte for byte, so a store name given here may differ from
        the `meta.name` that `get` returns.
        """
        src_dir = Path(src_dir)
        eraser = read_eraser(src_dir)
        meta = eraser.meta
        name = self._admit(eraser, src_dir, name, force)
        with self._write() as db:
            staged = self.tmp / uuid.uuid4().hex
            dest = None
            try:
                self._stage(src_dir, staged, meta.sha256)
                row = db.execute(
                    "SELECT version FROM last_version WHERE name = ?", (name,)
                ).fetchone()
                version = 1 if row is None else row[0] + 1
                dest = self.objects / name / str(version)
                # Files here without a row can only be left by a crash between rename and commit.
                _remove(dest)
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.rename(staged, dest)
                fsync_dir(dest.parent)
                db.execute(
                    f"INSERT INTO erasers ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        name,
                        version,
                        meta.behavior,
                        meta.num_virtual_tokens,
                        meta.hidden_size,
                        meta.sha256,
                        meta.carrier_fingerprint,
                        meta.created,
                    ),
                )
                db.execute(
                    "INSERT INTO last_version (name, version) VALUES (?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET version = excluded.version",
                    (name, version),
                )
            except BaseException:
                # Still under the write lock, so no other writer can be using these paths.
                _remove(staged)
                if dest is not None:
                    _remove(dest)
                raise
        return self.record(name, version)

    def remove(self, name: str, version: int | None = None) -> list[int]:
        """Unregister all versions of `name` (or one); returns the versions removed."""
        self.record(name, version)  # raises EraserNotFound with what the store does hold
        where, params = "WHERE name = ?", (name,)
        if version is not None:
            where, params = "WHERE name = ? AND version = ?", (name, version)
        with self._write() as db:
            removed = [v for (v,) in db.execute(f"SELECT version FROM erasers {where}", params)]
            db.execute(f"DELETE FROM erasers {where}", params)
        # The rows are gone, so the files are already invisible; a crash here leaves orphans.
        for v in removed:
            _remove(self.objects / name / str(v))
        return removed

    def verify(self) -> list[str]:
        """One line per problem: corrupted or missing erasers, carrier mismatches, leftovers."""
        # Under the write lock: no add is between its rename and its commit, so every file
        # without a row really is a leftover.
        with self._write():
            records = self.list(all_versions=True)
            orphans = self._orphans(records)
            garbage = self._stale_tmp()
        problems = self._problems(records)
        problems += [f"orphan {p}: files without an index row (gc removes them)" for p in orphans]
        problems += [f"leftover {p}: interrupted add or upload (gc removes it)" for p in garbage]
        return problems

    def gc(self) -> list[Path]:
        """Remove orphans and tmp leftovers; returns what was removed."""
        with self._write():
            doomed = self._orphans(self.list(all_versions=True)) + self._stale_tmp()
            for path in doomed:
                _remove(path)
            for name_dir in self.objects.iterdir():
                if name_dir.is_dir() and not any(name_dir.iterdir()):
                    name_dir.rmdir()
        return doomed

    def clean_tmp(self) -> list[Path]:
        """Remove what interrupted adds and uploads left in tmp/ (a server does at start)."""
        with self._write():
            doomed = self._stale_tmp()
            for path in doomed:
                _remove(path)
        return doomed

    # ---- internals

    def _stale_tmp(self) -> list[Path]:
        """tmp/ entries nothing is writing; under the write lock, where no add is staging."""
        return [p for p in sorted(self.tmp.iterdir()) if not _live_upload(p)]

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # Autocommit mode: transactions are begun and ended explicitly in _write.
        db = sqlite3.connect(self.index, timeout=LOCK_TIMEOUT_S, isolation_level=None)
        try:
            yield db
        finally:
            db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction. BEGIN IMMEDIATE takes the write lock up front, which
        serializes writers across processes."""
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _select(self, clause: str, params: tuple) -> list[EraserRecord]:
        with self._connect() as db:
            rows = db.execute(f"SELECT {COLUMNS} FROM erasers {clause}", params).fetchall()
        return [EraserRecord(*row, path=self.objects / row[0] / str(row[1])) for row in rows]

    def _records_of(self, name: str) -> list[EraserRecord]:
        return self._select("WHERE name = ? ORDER BY version", (name,))

    def _load(self, rec: EraserRecord) -> Eraser:
        try:
            eraser = read_eraser(rec.path)
        except EraserFormatError as e:
            raise EraserCorrupted(f"eraser {rec.ref} is corrupted or missing: {e}") from None
        if eraser.meta.sha256 != rec.sha256:
            raise EraserCorrupted(
                f"eraser {rec.ref} is corrupted: {rec.path} holds sha256 "
                f"{eraser.meta.sha256[:12]}…, registered as {rec.sha256[:12]}…"
            )
        return eraser

    def _stage(self, src_dir: Path, staged: Path, sha256: str) -> None:
        """Copy the eraser's files (only those) into `staged` and verify the copy."""
        staged.mkdir()
        try:
            for file_name in FILES:
                write_synced(staged / file_name, (src_dir / file_name).read_bytes())
            fsync_dir(staged)
        except OSError as e:
            raise EraserStoreError(f"cannot copy {src_dir} into the store: {e}") from None
        try:
            copy = read_eraser(staged)
        except EraserFormatError as e:
            raise EraserStoreError(f"copy of {src_dir} failed verification: {e}") from None
        if copy.meta.sha256 != sha256:
            raise EraserStoreError(f"{src_dir} changed while it was being added; add it again")

    def _orphans(self, records: list[EraserRecord]) -> list[Path]:
        known = {rec.path for rec in records}
        orphans = []
        for name_dir in sorted(self.objects.iterdir()):
            if not name_dir.is_dir():
                orphans.append(name_dir)
                continue
            orphans += [p for p in sorted(name_dir.iterdir()) if p not in known]
        return orphans


def _live_upload(path: Path) -> bool:
    m = UPLOAD_RE.fullmatch(path.name)
    if m is None:
        return False
    try:
        os.kill(int(m.group("pid")), 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True  # another user's process: alive
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
