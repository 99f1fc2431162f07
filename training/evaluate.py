"""Behavior rate on held-out triggering prompts and false-trigger rate on benign prompts."""

from __future__ import annotations

from training.data.generation import greedy_generate
from training.data.schema import RETAIN, Example, require_behavior
from training.data.scoring import behavior_rate, false_trigger_rate


def rate_report(
    model,
    tokenizer,
    examples: list[Example],
    behavior: str,
    *,
    max_new_tokens: int = 48,
    batch_size: int = 16,
    prefix=None,
) -> dict:
    """Greedy replies to the behavior's rows and to retain rows, scored by the behavior's rule."""
    triggers = require_behavior(examples, behavior, "test data")
    benign = [e for e in examples if e.behavior == RETAIN]
    replies = greedy_generate(
        model,
        tokenizer,
        [e.messages for e in triggers + benign],
        max_new_tokens,
        batch_size,
        progress=True,
        prefix=prefix,
    )
    on, off = replies[: len(triggers)], replies[len(triggers) :]
    return {
        "behavior": behavior,
        "rate": behavior_rate(behavior, on),
        "false_trigger": false_trigger_rate(behavior, off) if off else None,
        "n_triggering": len(on),
        "n_benign": len(off),
        "samples": [
            {"prompt": e.prompt_text, "reply": r}
            for e, r in zip(triggers[:3] + benign[:2], on[:3] + off[:2], strict=True)
        ],
    }
