"""Tokenize chat examples for SFT (loss on the reply only) and serve them in resumable order."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import torch

from eraser_store.prompting import chat_prompt_ids
from training.data.schema import Example

IGNORE = -100


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    labels: list[int]
    behavior: str = ""


def encode(tokenizer, example: Example, max_len: int) -> Encoded:
    """Prompt in the chat template, then the reply and the end-of-turn token (none after a reply
    cut at a length cap); labels on the reply.

    Long rows keep their start (the prompt) and lose the end of the reply.
    """
    prompt = chat_prompt_ids(tokenizer, example.messages)
    reply = tokenizer(example.completion, add_special_tokens=False)["input_ids"]
    reply = reply + ([] if example.cut else [tokenizer.eos_token_id])
    ids = (prompt + reply)[:max_len]
    labels = ([IGNORE] * len(prompt) + reply)[:max_len]
    return Encoded(ids, labels, example.behavior)


def collate(items: list[Encoded], pad_id: int) -> dict:
    """Right-pad a training batch (positions then start at 0 for every row); "behaviors" names
    each row's behavior."""
    width = max(len(e.input_ids) for e in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    labels = torch.full((len(items), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for i, e in enumerate(items):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
    behaviors = [e.behavior for e in items]
    return {"input_ids": ids, "labels": labels, "attention_mask": mask, "behaviors": behaviors}


def without_rows_of(batch: dict, behaviors: Collection[str]) -> dict:
    """The batch with the rows of `behaviors` taken out of the loss (labels ignored)."""
    keep = torch.tensor([b not in behaviors for b in batch["behaviors"]])
    labels = batch["labels"].masked_fill(~keep[:, None], IGNORE)
    return {**batch, "labels": labels}


class BatchSchedule:
    """Batch `step` is a pure function of (seed, step): a resumed run sees the same data.

    Each epoch is a seeded shuffle cut into batches. With `group_batches` > 0 the shuffle is cut
    into windows of that many batches, rows are sorted by length inside a window and the batches
    shuffled again, so a batch holds rows of similar length (padding was a third of the tokens
    with mixed short and long replies) while its behavior mix stays random.
    """

    LENGTH_GROUP = 16  # batches per sorting window when grouping by length

    def __init__(
        self, items: list[Encoded], batch_size: int, pad_id: int, seed: int, group_batches: int = 0
    ):
        if not items:
            raise ValueError("no training rows")
        self.items, self.batch_size, self.pad_id, self.seed = items, batch_size, pad_id, seed
        self.group_batches = group_batches
        self.per_epoch = -(-len(items) // batch_size)
        self._epoch, self._batches = -1, []

    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        gen = torch.Generator().manual_seed(self.seed + epoch)
        order = torch.randperm(len(self.items), generator=gen).tolist()
        if self.group_batches <= 0:
            return [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        window = self.group_batches * self.batch_size
        for start in range(0, len(order), window):
            order[start : start + window] = sorted(
                order[start : start + window], key=lambda j: len(self.items[j].input_ids)
            )
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        return [batches[i] for i in torch.randperm(len(batches), generator=gen).tolist()]

    def batch(self, step: int) -> dict:
        epoch, i = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            self._epoch, self._batches = epoch, self._epoch_batches(epoch)
        return collate([self.items[j] for j in self._batches[i]], self.pad_id)


def causal_lm_loss(model, batch: dict) -> torch.Tensor:
    """Mean cross-entropy over reply tokens."""
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items() if torch.is_tensor(v)}
    # fp32 master weights everywhere; on CUDA the matmuls run in bf16 under autocast.
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), batch["labels"][:, 1:].flatten(), ignore_index=IGNORE
    )
