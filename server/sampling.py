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

    def generator(self, device: torch.device | str = "cpu") -> torch.Generator | None:
        """The row's own random stream, on the device its logits are on."""
        if self.greedy:
            return None
        seed = self.seed if self.seed is not None else secrets.randbits(63)
        return torch.Generator(device=device).manual_seed(seed % (1 << 63))


def next_tokens(
    logits: torch.Tensor, params: list[SamplingParams], generators: list[torch.Generator | None]
) -> list[int]:
    """logits (B, vocab) -> one token id per row. Everything stays on the logits' device until
    one copy of the B chosen ids: no host round trip per row."""
    chosen = logits.argmax(-1)
    sampled = [i for i, p in enumerate(params) if not p.greedy]
    if sampled:
        rows = torch.tensor(sampled, device=logits.device)
        draws = _sample(
            logits[rows], [params[i] for i in sampled], [generators[i] for i in sampled]
        )
        chosen = chosen.index_copy(0, rows, draws)
    return chosen.tolist()


def _sample(
    logits: torch.Tensor, params: list[SamplingParams], generators: list[torch.Generator]
) -> torch.Tensor:
    """One draw per row (k, vocab) -> (k,) token ids, each row from its own generator."""
    device = logits.device
    temperature = torch.tensor([p.temperature for p in params], dtype=torch.float64, device=device)
    probs = torch.softmax(logits.double() / temperature[:, None], -1)
    order = None
    if any(p.top_p < 1.0 for p in params):
        top_p = torch.tensor([p.top_p for p in params], dtype=torch.float64, device=device)
        probs, order = probs.sort(-1, descending=True)
        # Keep the smallest set whose mass reaches top_p (always at least the top token).
        probs = probs * (probs.cumsum(-1) - probs < top_p[:, None])
    # Non-finite logits (fp16 overflow) leave nothing to draw from: such a row takes the argmax.
    drawable = torch.isfinite(probs).all(-1) & (probs.sum(-1) > 0)
    probs = torch.where(drawable[:, None], probs, torch.ones_like(probs))
    picks = torch.cat(
        [torch.multinomial(row, 1, generator=g) for row, g in zip(probs, generators, strict=True)]
    )
    tokens = picks if order is None else order.gather(1, picks[:, None])[:, 0]
    fallback = logits.nan_to_num(nan=-float("inf")).argmax(-1)
    return torch.where(drawable, tokens, fallback)
