"""Choosing each row's next token: greedy at temperature 0, else temperature + top-p sampling.

Each sampled request has its own generator, seeded from its `seed`, so what it draws does not
depend on the other rows of the batch.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import torch

MIN_TEMPERATURE = 1e-4


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False  # benchmarks: always generate max_tokens

    @property
    def greedy(self) -> bool:
        # Below this, logits / temperature overflows fp32; the distribution is argmax anyway.
        return self.temperature < MIN_TEMPERATURE

    def generator(self) -> torch.Generator | None:
        if self.greedy:
            return None
        seed = self.seed if self.seed is not None else secrets.randbits(63)
        return torch.Generator().manual_seed(seed % (1 << 63))


def next_tokens(
    logits: torch.Tensor, params: list[SamplingParams], generators: list[torch.Generator | None]
) -> list[int]:
    """logits (B, vocab) -> one token id per row."""
    chosen = logits.argmax(-1).tolist()
    for i, (p, gen) in enumerate(zip(params, generators, strict=True)):
        if not p.greedy:
            chosen[i] = _sample(logits[i].float().cpu(), p, gen)
    return chosen


def _sample(logits: torch.Tensor, p: SamplingParams, gen: torch.Generator) -> int:
    probs = torch.softmax(logits.double() / p.temperature, -1)
    if not torch.isfinite(probs).all():  # non-finite logits (fp16 overflow): nothing to draw from
        return int(logits.nan_to_num(nan=-float("inf")).argmax())
    if p.top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        # Keep the smallest set whose mass reaches top_p (always at least the top token).
        keep = sorted_probs.cumsum(-1) - sorted_probs < p.top_p
        sorted_probs = sorted_probs * keep
        pick = torch.multinomial(sorted_probs / sorted_probs.sum(), 1, generator=gen)
        return int(order[pick])
    return int(torch.multinomial(probs, 1, generator=gen))
