"""The KV of eraser prefixes, computed once per ordered eraser set and kept within a byte budget."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

from server.kv_batch import KV


def kv_bytes(kv: KV) -> int:
    return sum(t.numel() * t.element_size() for layer in kv for t in layer)


class PrefixKVCache:
    """Least recently used out once the entries pass `max_bytes`. Bounded by bytes, not entries:
    an entry is layers x 2 x prefix tokens x KV width, about 40 MiB for 80 eraser tokens on a 7B
    multi-head model, so 64 entries could hold gigabytes of accelerator memory."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[Hashable, tuple[KV, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable) -> KV | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry[0]

    def put(self, key: Hashable, kv: KV) -> None:
        """Keep `kv` under `key`, unless it alone is over the budget."""
        size = kv_bytes(kv)
        if size > self.max_bytes:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= old[1]
        self._entries[key] = (kv, size)
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, (_, evicted) = self._entries.popitem(last=False)
            self.bytes -= evicted
