"""Eraser file format and registry (a directory, or PostgreSQL: `open_store`), shared by
`training` (writes erasers) and `server` (serves them). Depends on neither."""

from eraser_store.backends import EraserStoreUnavailable, Store, open_store
from eraser_store.format import (
    CarrierRef,
    Eraser,
    EraserFormatError,
    EraserMeta,
    carrier_ref,
    read_eraser,
    write_eraser,
)
from eraser_store.stacking import stack_key
from eraser_store.store import (
    CarrierMismatch,
    EraserCorrupted,
    EraserNotFound,
    EraserRecord,
    EraserRefused,
    EraserStore,
    EraserStoreError,
    parse_ref,
)

__all__ = [
    "CarrierMismatch",
    "CarrierRef",
    "Eraser",
    "EraserCorrupted",
    "EraserFormatError",
    "EraserMeta",
    "EraserNotFound",
    "EraserRecord",
    "EraserRefused",
    "EraserStore",
    "EraserStoreError",
    "EraserStoreUnavailable",
    "Store",
    "carrier_ref",
    "open_store",
    "parse_ref",
    "read_eraser",
    "stack_key",
    "write_eraser",
]
