"""The running batch's KV cache as plain tensors: join new rows, drop finished ones, trim padding.

Rows are left-padded to a common width; a slot with attention mask 0 is padding. Positions are
passed explicitly, so moving a row's padding never changes what its real slots compute.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import DynamicCache

KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer (keys, values): (B, heads, W, head_dim)


@dataclass
class BatchCache:
    kv: KV
    mask: torch.Tensor  # (B, W) long, 1 on real slots

    @property
    def width(self) -> int:
        return self.mask.shape[1]

    @classmethod
    def from_model_cache(cls, cache, mask: torch.Tensor) -> BatchCache:
        return cls([(layer.keys, layer.values) for layer in cache.layers], mask)

    def model_cache(self) -> DynamicCache:
        return DynamicCache(ddp_cache_data=self.kv)

    def join(self, other: BatchCache) -> BatchCache:
        width = max(self.width, other.width)
        a, b = self._pad_to(width), other._pad_to(width)
        kv = [
            (torch.cat([ka, kb]), torch.cat([va, vb]))
            for (ka, va), (kb, vb) in zip(a.kv, b.kv, strict=True)
        ]
        return BatchCache(kv, torch.cat([a.mask, b.mask]))

    def select(self, rows: list[int]) -> BatchCache:
        index = torch.tensor(rows, device=self.mask.device)
        kv = [(k.index_select(0, index), v.index_select(0, index)) for k, v in self.kv]
        return BatchCache(kv, self.mask.index_select(0, index)).trimmed()

    def trimmed(self) -> BatchCache:
        """Drop leading slots that are padding in every row (left by rows that finished)."""
        used = self.mask.any(0).nonzero()
        first = int(used[0]) if len(used) else self.width
        if first == 0:
            return self
        return BatchCache(
            [(k[:, :, first:], v[:, :, first:]) for k, v in self.kv], self.mask[:, first:]
        )

    def _pad_to(self, width: int) -> BatchCache:
        extra = width - self.width
        if extra == 0:
            return self
        kv = [(F.pad(k, (0, 0, extra, 0)), F.pad(v, (0, 0, extra, 0))) for k, v in self.kv]
        return BatchCache(kv, F.pad(self.mask, (extra, 0)))
