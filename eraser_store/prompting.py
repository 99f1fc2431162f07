"""How prompts are laid out around erasers: the contract between training and serving.

An eraser only works on the inputs it was optimized on, so the trainer and the server must build
them the same way: the chat template with the assistant header, and each row laid out as
`[pad][eraser embeddings...][prompt embeddings]` with positions counted from the first real slot.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch


def chat_prompt_ids(tokenizer, messages: Sequence[dict]) -> list[int]:
    """Token ids of the chat-formatted prompt, ending with the assistant generation header."""
    ids = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=True)
    # transformers 5 returns a BatchEncoding; 4.x a plain list (or a batch of one).
    if isinstance(ids, Mapping):
        ids = ids["input_ids"]
    if isinstance(ids, torch.Tensor):
        ids = ids.tolist()
    if ids and isinstance(ids[0], list):
        (ids,) = ids
    return [int(i) for i in ids]


def prefixed_rows(
    prompts: Sequence[torch.Tensor], prefixes: Sequence[torch.Tensor | None]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-padded batch of `[pad][prefix_i][prompt_i]` rows.

    prompts: per row (len_i, d) prompt embeddings; prefixes: per row (n_i, d) or None.
    Returns inputs_embeds (B, W, d), attention_mask (B, W) and position_ids (B, W); padding slots
    are zero vectors with mask 0, so a row's real slots do not depend on the rest of the batch.
    Differentiable in the prefixes (the eraser trainer optimizes through it).
    """
    if len(prompts) != len(prefixes) or not prompts:
        raise ValueError("one prefix (or None) per prompt, at least one prompt")
    first = prompts[0]
    rows = [
        p if x is None else torch.cat([x.to(p.dtype), p])
        for p, x in zip(prompts, prefixes, strict=True)
    ]
    width = max(r.shape[0] for r in rows)
    embeds = first.new_zeros(len(rows), width, first.shape[-1])
    mask = torch.zeros(len(rows), width, dtype=torch.long, device=first.device)
    for i, row in enumerate(rows):
        embeds[i, width - row.shape[0] :] = row
        mask[i, width - row.shape[0] :] = 1
    return embeds, mask, positions(mask)


def positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position of each slot counted from the row's first real token (padding gets 0)."""
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)
