"""The running batch's KV cache: join new rows, drop finished ones, trim shared padding.

Rows are left-padded to a common width; a slot with attention mask 0 is padding. Positions are
passed explicitly, so moving a row's padding never changes what its real slots compute. Decode
steps append to `cache` in place; only a change of the batch's rows copies the tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import DynamicCache

KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer (keys, values): (B, heads, W, head_dim)


@dataclass
class BatchCache:
    cache: DynamicCache  # the model's own cache object
    mask: torch.Tensor  # (B, W) long, 1 on real slots

    @classmethod
    def from_kv(cls, kv: KV, mask: torch.Tensor) -> BatchCache:
        return cls(DynamicCache(ddp_cache_data=kv), mask)

    @property
    def kv(self) -> KV:
        return [(layer.keys, layer.values) for layer in self.cache.layers]

    @property
    def width(self) -> int:
        return self.mask.shape[1]

    def join(self, other: BatchCache) -> BatchCache:
        width = max(self.width, other.width)
        a, b = self._padded(width), other._padded(width)
        kv = [
            (torch.cat([ka, kb]), torch.cat([va, vb]))
            for (ka, va), (kb, vb) in zip(a[0], b[0], strict=True)
        ]
        return BatchCache.from_kv(kv, torch.cat([a[1], b[1]]))

    def select(self, rows: list[int]) -> BatchCache:
        """Keep `rows`, then drop leading slots that are padding in every kept row."""
        index = torch.tensor(rows, device=self.mask.device)
        mask = self.mask.index_select(0, index)
        used = mask.any(0).nonzero()
        first = int(used[0]) if len(used) else mask.shape[1]
        kv = [
            (k.index_select(0, index)[:, :, first:], v.index_select(0, index)[:, :, first:])
            for k, v in self.kv
        ]
        return BatchCache.from_kv(kv, mask[:, first:])

    def _padded(self, width: int) -> tuple[KV, torch.Tensor]:
        extra = width - self.width
        if extra == 0:
            return self.kv, self.mask
        kv = [(F.pad(k, (0, 0, extra, 0)), F.pad(v, (0, 0, extra, 0))) for k, v in self.kv]
        return kv, F.pad(self.mask, (extra, 0))
