"""Erasers named by requests: permission, resolution against the store, device-side cache.

Names resolve against the store's index at each request, so an eraser added or removed (by the
admin routes or by `sft-eraser erasers` on the same store) counts for the next request; on a
store shared by replicas (PostgreSQL), against this replica's view of it (server/replica.py),
at most a poll behind. Resolved embeddings are cached on the model's device by (name, version,
sha256): versions are never reused, so a cached entry is never stale. The cache keeps the most
recently used entries that fit in `max_bytes` (erasers of a large model are large: 20 x 8192
fp32 is 640 KiB), so registering version after version does not grow it without end, while
clients pinning different versions of one name still hit it. A request holds its own tensors,
so removing an eraser or evicting its entry never affects a request in flight; a read
that a removal overtook hands its tensor to its request but does not cache it.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass

import torch

from eraser_store import (
    EraserCorrupted,
    EraserFormatError,
    EraserNotFound,
    EraserRecord,
    EraserStoreError,
    EraserStoreUnavailable,
    parse_ref,
    stack_key,
)
from eraser_store.store import StoreBase
from server import errors
from server.auth import ApiKey

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResolvedEraser:
    record: EraserRecord
    embeddings: torch.Tensor  # (tokens, hidden) on the model's device, in its dtype


class ErasersOnDevice:
    def __init__(self, store: StoreBase, device: torch.device, dtype: torch.dtype, max_bytes: int):
        self.store, self.device, self.dtype = store, device, dtype
        self.max_bytes = max_bytes
        self._cache: OrderedDict[tuple[str, int, str], torch.Tensor] = OrderedDict()
        self._bytes = 0  # held by _cache
        self._removals: dict[str, int] = {}  # forget() calls per name, to spot an overtaken read
        self._lock = threading.Lock()

    def resolve(self, refs: list[str], key: ApiKey | None) -> list[ResolvedEraser]:
        """The erasers in the order they stack (`stack_key`), whatever order `refs` lists them
        in. Raises APIError: 400 bad reference, 403 not allowed for this key, 404 unknown."""
        parsed = []
        for i, ref in enumerate(refs):
            try:
                parsed.append(parse_ref(ref))
            except EraserStoreError as e:
                raise errors.bad_request(str(e), param=f"erasers[{i}]") from None
        # A request's erasers are a set of behaviors switched off: one name twice (even at two
        # versions) would stack one soft prompt on itself, which nothing was trained for.
        first_at: dict[str, int] = {}
        for i, (name, _) in enumerate(parsed):
            if name in first_at:
                raise errors.bad_request(
                    f"eraser {name!r} is named twice (erasers[{first_at[name]}] and "
                    f"erasers[{i}]); a request applies each eraser at most once",
                    param=f"erasers[{i}]",
                    code="duplicate_eraser",
                )
            first_at[name] = i
        # Permission before existence: a key must not learn which erasers exist beyond its own.
        for i, (name, _) in enumerate(parsed):
            if key is not None and not key.may_use(name):
                raise errors.forbidden(
                    f"API key {key.name!r} may not use eraser {name!r}", param=f"erasers[{i}]"
                )
        resolved = []
        for i, (name, version) in enumerate(parsed):
            try:
                record = self.store.record(name, version)
                resolved.append(ResolvedEraser(record, self._embeddings(record)))
            except EraserNotFound:
                # The store's own message names its directory: not for clients.
                raise errors.not_found(
                    f"no eraser {refs[i]!r} is registered",
                    code="eraser_not_found",
                    param=f"erasers[{i}]",
                ) from None
            except EraserStoreUnavailable as e:
                # Known here, but its bytes were never read on this replica: nothing verified
                # to serve until the store is back.
                log.warning("eraser %s not loaded here and the store is lost: %s", refs[i], e)
                raise errors.unavailable(
                    f"eraser {refs[i]!r} cannot be loaded now (the eraser store is "
                    "unreachable); retry later",
                    code="store_lost",
                ) from None
            except (EraserCorrupted, EraserFormatError, OSError):
                # A file gone between the record and the read (FileNotFoundError) is an eraser
                # removed meanwhile, unless it is still registered.
                if not self._still_registered(name, version):
                    raise errors.not_found(
                        f"no eraser {refs[i]!r} is registered",
                        code="eraser_not_found",
                        param=f"erasers[{i}]",
                    ) from None
                log.exception("eraser %s is unusable", refs[i])
                raise errors.APIError(
                    500,
                    f"eraser {refs[i]!r} is damaged on the server; see the server log",
                    type="server_error",
                    code="eraser_corrupted",
                ) from None
        return sorted(
            resolved, key=lambda e: stack_key(e.record.behavior, e.record.name, e.record.version)
        )

    def _still_registered(self, name: str, version: int | None) -> bool:
        try:
            self.store.record(name, version)
        except EraserNotFound:
            return False
        return True

    def forget(self, name: str) -> None:
        with self._lock:
            self._removals[name] = self._removals.get(name, 0) + 1
            for k in [k for k in self._cache if k[0] == name]:
                self._bytes -= _nbytes(self._cache.pop(k))

    def _embeddings(self, record: EraserRecord) -> torch.Tensor:
        k = (record.name, record.version, record.sha256)
        with self._lock:
            cached = self._cache.get(k)
            if cached is not None:
                self._cache.move_to_end(k)
            removals = self._removals.get(record.name, 0)
        if cached is None:
            eraser = self.store.get(record.name, record.version)
            cached = eraser.embeddings.to(self.device, self.dtype)
            with self._lock:
                if self._removals.get(record.name, 0) != removals:
                    return cached  # removed while it was read: nothing may cache it again
                if k not in self._cache:  # another request may have stored it meanwhile
                    self._cache[k] = cached
                    self._bytes += _nbytes(cached)
                while self._bytes > self.max_bytes:
                    self._bytes -= _nbytes(self._cache.popitem(last=False)[1])
        return cached

    @property
    def cached_bytes(self) -> int:
        return self._bytes


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def stacked(erasers: list[ResolvedEraser]) -> torch.Tensor | None:
    """The prefix of a request: its erasers' embeddings, in the order given (resolve's)."""
    if not erasers:
        return None
    return torch.cat([e.embeddings for e in erasers])
