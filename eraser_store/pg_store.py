"""The eraser registry on PostgreSQL: index and bytes in one database, shared by many replicas.

    erasers               one row per registered version, with its three files as bytea
    eraser_last_version   highest version ever given to a name (versions are never reused)
    eraser_generation     one row, bumped by every add and remove: replicas poll this number

An eraser is kilobytes (tokens x hidden float32), so its bytes sit in the row that registers it:
an add or a remove is one transaction, and there is nothing to leave behind. Every write locks
the generation row first, so writers are serialized (as SQLite's BEGIN IMMEDIATE does for the
directory store) and versions come out unique and gapless per name. Every read re-parses the
bytes and re-checks their sha256 against the index.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

from eraser_store.backends import EraserStoreUnavailable
from eraser_store.format import (
    CONFIG_FILE,
    SIDECAR_FILE,
    WEIGHTS_FILE,
    CarrierRef,
    Eraser,
    EraserFormatError,
    parse_eraser,
    read_files,
)
from eraser_store.store import (
    EraserCorrupted,
    EraserNotFound,
    EraserRecord,
    EraserStoreError,
    StoreBase,
)

CONNECT_TIMEOUT_S = 5
# Any constant: the advisory lock that keeps concurrent first opens from racing on CREATE TABLE.
SCHEMA_LOCK = 0x5F7E_E4A5
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
        config BYTEA NOT NULL,
        weights BYTEA NOT NULL,
        sidecar BYTEA NOT NULL,
        PRIMARY KEY (name, version)
    )""",
    """CREATE TABLE IF NOT EXISTS eraser_last_version (
        name TEXT PRIMARY KEY,
        version INTEGER NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS eraser_generation (
        one BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
        generation BIGINT NOT NULL
    )""",
    "INSERT INTO eraser_generation (generation) VALUES (0) ON CONFLICT DO NOTHING",
)


class PgEraserStore(StoreBase):
    def __init__(self, url: str, carrier: CarrierRef | None = None):
        self.url = url
        self.location = public_url(url)
        self.carrier = carrier
        try:
            with self._connect() as db, db.transaction():
                db.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
                for statement in SCHEMA:
                    db.execute(statement)
        except psycopg.Error as e:  # a bad URL, a missing database, no right to create tables
            raise EraserStoreError(
                f"cannot open the eraser store {self.location}: {_one_line(e)}"
            ) from None

    # ---- reading

    def list(self, all_versions: bool = False) -> list[EraserRecord]:
        """The latest version of each name (every version with all_versions), by name."""
        latest = (
            "WHERE version = (SELECT MAX(version) FROM erasers AS e WHERE e.name = erasers.name)"
        )
        with self._connect() as db:
            return _select(db, f"{'' if all_versions else latest} ORDER BY name, version", ())

    def snapshot(self) -> tuple[int, list[EraserRecord]]:
        """The generation and every version as of that generation (one consistent read)."""
        with self._connect() as db, db.transaction():
            db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            generation = db.execute("SELECT generation FROM eraser_generation").fetchone()[0]
            return generation, _select(db, "ORDER BY name, version", ())

    def generation(self) -> int:
        """Bumped by every add and remove: a replica whose view has it is up to date."""
        with self._connect() as db:
            return db.execute("SELECT generation FROM eraser_generation").fetchone()[0]

    # ---- writing

    def add(
        self,
        src_dir: str | os.PathLike,
        *,
        name: str | None = None,
        force: bool = False,
        version: int | None = None,
    ) -> EraserRecord:
        """Register the eraser at `src_dir` as the next version of `name` (default: its own), or
        as `version` (a migration keeping numbers: only above every number given out so far).
        The bytes validated are the bytes stored: they are read once."""
        src_dir = Path(src_dir)
        return self._add(read_files(src_dir), src_dir, name, force, version)

    def add_files(
        self, files: Mapping[str, bytes], *, name: str | None = None, force: bool = False
    ) -> EraserRecord:
        """Register an eraser received as the bytes of its files (an upload): nothing is
        written outside the database, so a killed upload leaves nothing behind."""
        return self._add(files, "upload", name, force, None)

    def _add(
        self,
        files: Mapping[str, bytes],
        where: str | os.PathLike,
        name: str | None,
        force: bool,
        version: int | None,
    ) -> EraserRecord:
        eraser = parse_eraser(files, where)
        name = self._admit(eraser, where, name, force)
        meta = eraser.meta
        with self._write() as db:
            last = db.execute(
                "SELECT version FROM eraser_last_version WHERE name = %s", (name,)
            ).fetchone()
            last = 0 if last is None else last[0]
            if version is None:
                version = last + 1
            elif version <= last:
                raise EraserStoreError(
                    f"cannot add {name}@{version} to {self.location}: versions up to {last} "
                    "were given out already (numbers are never reused)"
                )
            db.execute(
                "INSERT INTO eraser_last_version (name, version) VALUES (%s, %s) "
                "ON CONFLICT (name) DO UPDATE SET version = excluded.version",
                (name, version),
            )
            row = (
                name,
                version,
                meta.behavior,
                meta.num_virtual_tokens,
                meta.hidden_size,
                meta.sha256,
                meta.carrier_fingerprint,
                meta.created,
            )
            db.execute(
                f"INSERT INTO erasers ({COLUMNS}, config, weights, sidecar) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (*row, files[CONFIG_FILE], files[WEIGHTS_FILE], files[SIDECAR_FILE]),
            )
        return EraserRecord(*row, path=None)

    def remove(self, name: str, version: int | None = None) -> list[int]:
        """Unregister all versions of `name` (or one); returns the versions removed."""
        self.record(name, version)  # raises EraserNotFound with what the store does hold
        where, params = "WHERE name = %s", (name,)
        if version is not None:
            where, params = "WHERE name = %s AND version = %s", (name, version)
        with self._write() as db:
            rows = db.execute(f"DELETE FROM erasers {where} RETURNING version", params)
            return sorted(v for (v,) in rows)

    def verify(self) -> list[str]:
        """One line per problem: corrupted erasers, carrier mismatches."""
        return self._problems(self.list(all_versions=True))

    def gc(self) -> list[Path]:
        """Nothing to collect: an add or a remove is one transaction."""
        return []

    # ---- internals

    def _records_of(self, name: str) -> list[EraserRecord]:
        with self._connect() as db:
            return _select(db, "WHERE name = %s ORDER BY version", (name,))

    def _load(self, rec: EraserRecord) -> Eraser:
        with self._connect() as db:
            row = db.execute(
                "SELECT config, weights, sidecar FROM erasers WHERE name = %s AND version = %s",
                (rec.name, rec.version),
            ).fetchone()
        if row is None:
            raise EraserNotFound(f"no eraser {rec.ref} in {self.location} (removed)")
        files = dict(zip((CONFIG_FILE, WEIGHTS_FILE, SIDECAR_FILE), map(bytes, row), strict=True))
        try:
            eraser = parse_eraser(files, f"{self.location}#{rec.ref}")
        except EraserFormatError as e:
            raise EraserCorrupted(f"eraser {rec.ref} is corrupted: {e}") from None
        if eraser.meta.sha256 != rec.sha256:
            raise EraserCorrupted(
                f"eraser {rec.ref} is corrupted: {self.location} holds sha256 "
                f"{eraser.meta.sha256[:12]}…, registered as {rec.sha256[:12]}…"
            )
        return eraser

    @contextmanager
    def _connect(self) -> Iterator[psycopg.Connection]:
        """A connection per operation: nothing to repair after the database restarts."""
        try:
            with psycopg.connect(
                self.url, connect_timeout=CONNECT_TIMEOUT_S, autocommit=True
            ) as db:
                yield db
        except psycopg.OperationalError as e:
            raise EraserStoreUnavailable(
                f"the eraser store {self.location} is unreachable: {_one_line(e)}"
            ) from None

    @contextmanager
    def _write(self) -> Iterator[psycopg.Connection]:
        """One write transaction, serialized with every other by the generation row's lock."""
        with self._connect() as db, db.transaction():
            db.execute("UPDATE eraser_generation SET generation = generation + 1")
            yield db


def _select(db: psycopg.Connection, clause: str, params: tuple) -> list[EraserRecord]:
    rows = db.execute(f"SELECT {COLUMNS} FROM erasers {clause}", params).fetchall()
    return [EraserRecord(*row, path=None) for row in rows]


def public_url(url: str) -> str:
    """The URL without its password: for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{netloc}"))


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())
