"""The two store back ends behind one interface, and `open_store`, which picks one by its spec.

a directory (the default)      EraserStore: SQLite index + files, one machine
postgresql://user@host/db      PgEraserStore: index and bytes in PostgreSQL, many replicas
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol, runtime_checkable

from eraser_store.format import CarrierRef, Eraser
from eraser_store.store import CarrierMismatch, EraserRecord, EraserStore, EraserStoreError

URL_SCHEMES = ("postgresql://", "postgres://")


class EraserStoreUnavailable(EraserStoreError):
    """The store's database cannot be reached now; the same call may work later."""


@runtime_checkable
class Store(Protocol):
    """What the CLI and the server use of a store; both back ends raise the same errors
    (EraserNotFound, EraserRefused, EraserCorrupted, EraserFormatError, EraserStoreError)."""

    carrier: CarrierRef | None
    location: str  # named in messages: a directory, or a URL without its password

    def record(self, name: str, version: int | None = None) -> EraserRecord: ...

    def get(self, name: str, version: int | None = None) -> Eraser: ...

    def list(self, all_versions: bool = False) -> list[EraserRecord]: ...

    def versions(self, name: str) -> list[int]: ...

    def carrier_mismatch(
        self, hidden_size: int, carrier_fingerprint: str, tokens: int
    ) -> CarrierMismatch | None: ...

    def add(
        self, src_dir: str | os.PathLike, *, name: str | None = None, force: bool = False
    ) -> EraserRecord: ...

    def add_files(
        self, files: Mapping[str, bytes], *, name: str | None = None, force: bool = False
    ) -> EraserRecord: ...

    def remove(self, name: str, version: int | None = None) -> list[int]: ...

    def verify(self) -> list[str]: ...

    def gc(self) -> list[Path]: ...


def is_url(spec: str | os.PathLike) -> bool:
    return isinstance(spec, str) and spec.startswith(URL_SCHEMES)


def open_store(spec: str | os.PathLike, carrier: CarrierRef | None = None) -> Store:
    """A `postgresql://` URL opens the PostgreSQL store; anything else is a store directory."""
    if is_url(spec):
        from eraser_store.pg_store import PgEraserStore  # psycopg only where it is used

        return PgEraserStore(str(spec), carrier=carrier)
    return EraserStore(spec, carrier=carrier)
