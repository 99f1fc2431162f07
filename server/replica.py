"""A replica's view of a store shared with other replicas (PostgreSQL).

Lookups (which versions exist, their sha256) come from a snapshot in memory; a thread polls the
store's generation every `poll_s` and takes a new snapshot when it moved, so an add or a remove
on any replica or from the CLI counts here within about `poll_s`. Bytes are read from the store
on first use (their sha256 re-checked there) and then kept on the device (server/erasers.py).

When the database is unreachable the view keeps its last snapshot: erasers already verified and
on the device keep serving, the others answer 503, /ready and /metrics say the store is lost,
and the next poll that reaches the database catches up.
"""

from __future__ import annotations

import logging
import threading
import time

from eraser_store import Eraser, EraserRecord, EraserStoreUnavailable
from eraser_store.pg_store import PgEraserStore
from eraser_store.store import StoreBase

log = logging.getLogger(__name__)

POLL_S = 0.25  # well inside the 1 s in which a change must reach every replica


class ReplicaView(StoreBase):
    """The read side of `store` (record, get, list, versions), served from a snapshot."""

    def __init__(self, store: PgEraserStore, poll_s: float = POLL_S):
        self.store, self.poll_s = store, poll_s
        self.carrier, self.location = store.carrier, store.location
        self.lost_since: float | None = None  # time.time() of the first failed poll
        self._lock = threading.Lock()  # guards the snapshot
        self._refreshing = threading.Lock()  # one refresh at a time: an older one never wins
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._take(*store.snapshot())

    @property
    def generation(self) -> int:
        return self._generation

    def start(self) -> None:
        self._thread = threading.Thread(target=self._poll, name="store-view", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def refresh(self) -> None:
        """Catch up with the store now (the poll calls it; so does this replica's own write)."""
        with self._refreshing:
            self._refresh()

    def _refresh(self) -> None:
        try:
            if self.store.generation() != self._generation:
                self._take(*self.store.snapshot())
        except EraserStoreUnavailable as e:
            if self.lost_since is None:
                log.warning("eraser store lost; serving the erasers verified here: %s", e)
                self.lost_since = time.time()
            return
        if self.lost_since is not None:
            log.warning("eraser store back after %.1f s", time.time() - self.lost_since)
        self.lost_since = None

    def list(self, all_versions: bool = False) -> list[EraserRecord]:
        with self._lock:
            by_name = self._by_name
        return [
            rec
            for name in sorted(by_name)
            for rec in (by_name[name] if all_versions else by_name[name][-1:])
        ]

    def _records_of(self, name: str) -> list[EraserRecord]:
        with self._lock:
            return self._by_name.get(name, [])

    def _load(self, rec: EraserRecord) -> Eraser:
        return self.store._load(rec)

    def _take(self, generation: int, records: list[EraserRecord]) -> None:
        by_name: dict[str, list[EraserRecord]] = {}
        for rec in records:  # ordered by name, version
            by_name.setdefault(rec.name, []).append(rec)
        with self._lock:
            self._generation, self._by_name = generation, by_name

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.refresh()
            except Exception:  # a bug must not stop the view from ever catching up again
                log.exception("refreshing the eraser store view failed")
