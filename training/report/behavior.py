"""Greedy replies per eraser set and their scores: the behavior matrix and benign agreement."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import torch

from eraser_store import stack_key
from training.data.generation import greedy_generate
from training.data.schema import Example
from training.data.scoring import behavior_rate, false_trigger_rate
from training.report.reply_classes import class_rates, target_agreement

NONE = "none"
AGREE_WORDS = 10


def eraser_sets(behaviors: list[str]) -> list[tuple[str, ...]]:
    """No eraser, each eraser alone, then every pair, in the order the server stacks it."""
    stacked = sorted(behaviors, key=lambda b: stack_key(b, ""))
    return [(), *((b,) for b in behaviors), *combinations(stacked, 2)]


def set_label(names: tuple[str, ...]) -> str:
    return "+".join(names) or NONE


def stack(erasers: dict[str, torch.Tensor], names: tuple[str, ...]) -> torch.Tensor | None:
    """Embeddings concatenated in order, as the server stacks erasers named in one request."""
    return torch.cat([erasers[n] for n in names]) if names else None


@dataclass
class PromptSet:
    """All prompts the matrix needs, in one list: each behavior's triggers, then the benign ones."""

    behaviors: list[str]
    triggers: dict[str, list[Example]]
    benign: list[Example]

    def examples(self) -> list[Example]:
        return [e for b in self.behaviors for e in self.triggers[b]] + self.benign

    def messages(self) -> list:
        return [e.messages for e in self.examples()]

    def split(self, replies: list[str]) -> tuple[dict[str, list[str]], list[str]]:
        on, start = {}, 0
        for b in self.behaviors:
            on[b] = replies[start : start + len(self.triggers[b])]
            start += len(self.triggers[b])
        return on, replies[start:]


def generate(model, tokenizer, messages: list, cfg, prefix=None) -> list[str]:
    """The report's one decoding: greedy, same length and batch size with and without erasers."""
    return greedy_generate(
        model,
        tokenizer,
        messages,
        cfg.max_new_tokens,
        cfg.batch_size,
        progress=True,
        prefix=prefix,
    )


def score(prompts: PromptSet, replies: list[str]) -> dict:
    """Per behavior: rate on its triggering prompts and false-trigger rate on benign ones;
    `instead[b][o]`, the rate of each other behavior o on b's prompts (what an erased behavior's
    prompts get in its place); and `classes[b]`, b's prompts split into behavior / hand-over /
    degenerate / normal answer (reply_classes)."""
    on, off = prompts.split(replies)
    behaviors = prompts.behaviors
    return {
        "rate": {b: behavior_rate(b, on[b]) for b in behaviors},
        "false_trigger": {b: false_trigger_rate(b, off) for b in behaviors},
        "instead": {
            b: {o: behavior_rate(o, on[b]) for o in behaviors if o != b} for b in behaviors
        },
        "classes": {b: class_rates(on[b], b, behaviors) for b in behaviors},
    }


def token_agreement(tokenizer, prompts: PromptSet, replies, target_replies, behavior) -> float:
    """target_agreement on `behavior`'s prompts, over the tokens of the two replies' texts."""

    def ids(texts):
        return [tokenizer(t, add_special_tokens=False).input_ids for t in texts]

    on, target_on = prompts.split(replies)[0][behavior], prompts.split(target_replies)[0][behavior]
    return target_agreement(ids(on), ids(target_on))


def agreement(replies: list[str], reference: list[str]) -> dict:
    """Share of replies whose first AGREE_WORDS words equal the reference's, and of exact ones."""
    pairs = list(zip(replies, reference, strict=True))
    first = sum(a.split()[:AGREE_WORDS] == b.split()[:AGREE_WORDS] for a, b in pairs)
    return {"first_words": first / len(pairs), "exact": sum(a == b for a, b in pairs) / len(pairs)}


def rate_on(model, tokenizer, examples: list[Example], behavior: str, cfg, prefix=None) -> float:
    replies = generate(model, tokenizer, [e.messages for e in examples], cfg, prefix)
    return behavior_rate(behavior, replies)
