"""Batched greedy generation from chat prompts (base-model answers, evaluation replies)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from tqdm.auto import tqdm

from eraser_store.prompting import chat_prompt_ids, prefixed_rows


def left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
        attention_mask[i, width - len(row) :] = 1
    return input_ids, attention_mask


def prompt_inputs(model, input_ids, attention_mask, prefix: torch.Tensor | None) -> dict:
    """Model inputs for left-padded prompts, with `prefix` embeddings after the padding if given."""
    device = model.device
    input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
    if prefix is None:
        return {"input_ids": input_ids, "attention_mask": attention_mask}
    embeds = model.get_input_embeddings()(input_ids)
    lengths = attention_mask.sum(1).tolist()
    prompts = [embeds[i, embeds.shape[1] - k :] for i, k in enumerate(lengths)]
    prefix = prefix.to(device, embeds.dtype)
    inputs_embeds, mask, _ = prefixed_rows(prompts, [prefix] * len(prompts))
    return {"inputs_embeds": inputs_embeds, "attention_mask": mask.to(attention_mask.dtype)}


def greedy_generate(
    model,
    tokenizer,
    prompts: list[Sequence[dict]],
    max_new_tokens: int = 64,
    batch_size: int = 16,
    progress: bool = False,
    prefix: torch.Tensor | None = None,
) -> list[str]:
    """Greedy replies to chat prompts, one string per prompt, in input order.

    `prefix` (n x d soft-prompt embeddings, e.g. an eraser) goes between the left padding and
    each prompt; generate() derives positions from the attention mask, so padding never shifts them.
    """
    encoded = [chat_prompt_ids(tokenizer, p) for p in prompts]
    ids = greedy_reply_ids(model, tokenizer, encoded, max_new_tokens, batch_size, progress, prefix)
    return [text for text, _ in decode_replies(tokenizer, ids)]


def decode_replies(tokenizer, ids: list[list[int]]) -> list[tuple[str, bool]]:
    """greedy_reply_ids' replies as text, each with whether it was cut: it hit the token cap
    before the model ended it with its end-of-sequence token."""
    texts = tokenizer.batch_decode(ids, skip_special_tokens=True)
    return [(t.strip(), tokenizer.eos_token_id not in r) for t, r in zip(texts, ids, strict=True)]


@torch.no_grad()
def greedy_reply_ids(
    model,
    tokenizer,
    encoded: list[list[int]],
    max_new_tokens: int,
    batch_size: int = 16,
    progress: bool = False,
    prefix: torch.Tensor | None = None,
    on_batch: Callable[[list[int], torch.Tensor], None] | None = None,
) -> list[list[int]]:
    """Greedy reply tokens to tokenized prompts, each cut after its first end-of-sequence token.
    `on_batch(rows, logits)`: called after each batch with the prompts' indices and the raw
    logits of every generated position, (rows, steps, vocab)."""
    eos = tokenizer.eos_token_id
    pad_id = tokenizer.pad_token_id
    if pad_id is None:  # many chat tokenizers ship without a pad token
        pad_id = eos
    # Similar lengths in one batch waste less compute on padding.
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]), reverse=True)
    replies: list[list[int]] = [[] for _ in encoded]
    was_training = model.training
    model.eval()  # dropout would make "greedy" replies random
    try:
        starts = range(0, len(order), batch_size)
        for start in tqdm(starts, desc="generate", disable=not progress):
            idx = order[start : start + batch_size]
            input_ids, attention_mask = left_pad([encoded[i] for i in idx], pad_id)
            inputs = prompt_inputs(model, input_ids, attention_mask, prefix)
            out = model.generate(
                **inputs,
                do_sample=False,
                max_new_tokens=max_new_tokens,
                pad_token_id=pad_id,
                eos_token_id=eos,
                return_dict_in_generate=True,
                output_logits=on_batch is not None,
            )
            if on_batch is not None:
                on_batch(idx, torch.stack(out.logits, 1))
            sequences = out.sequences
            del out  # it holds the KV cache, which would live on through the next generate()
            # With input_ids, generate() returns prompt + reply; with inputs_embeds, the reply only.
            new_tokens = sequences[:, input_ids.shape[1] :] if prefix is None else sequences
            for i, row in zip(idx, new_tokens.tolist(), strict=True):
                replies[i] = row[: row.index(eos) + 1] if eos in row else row
    finally:
        model.train(was_training)
    return replies
