"""What SFT and LCDD runs share before training: pick the rows, tokenize, count the steps."""

from __future__ import annotations

import sys
from pathlib import Path

from training.batches import IGNORE, BatchSchedule, encode
from training.data.schema import RETAIN, DataError, Example, load_jsonl, require_behavior


def select_rows(data: Path, behavior: str, carrier_behaviors: list[str]) -> list[Example]:
    """Rows of `behavior`, retain rows, and rows of behaviors the base carrier already holds.

    Rows of behaviors not yet trained are left out: they would teach those too. Rows of behaviors
    already in the base keep them from being overwritten.
    """
    if behavior in carrier_behaviors:
        raise DataError(f"the base carrier already holds behavior {behavior!r}")
    examples = load_jsonl(data)
    require_behavior(examples, behavior, str(data))
    keep = {behavior, RETAIN, *carrier_behaviors}
    return [e for e in examples if e.behavior in keep]


def build_schedule(examples: list[Example], tokenizer, cfg) -> BatchSchedule:
    """Batches of `examples` by the run's max_len, batch_size, seed and group_by_length.

    A row whose prompt fills max_len has no reply token to learn: it is left out (with a warning),
    since a batch of such rows has no loss at all (NaN), which would poison the LCDD loss EMA.
    """
    encoded = [encode(tokenizer, e, cfg.max_len) for e in examples]
    items = [item for item in encoded if any(label != IGNORE for label in item.labels[1:])]
    if not items:
        raise DataError(f"every prompt fills --max-len {cfg.max_len}: no reply token to train on")
    if len(items) < len(encoded):
        print(
            f"warning: {len(encoded) - len(items)} of {len(encoded)} rows left out: their prompt "
            f"fills --max-len {cfg.max_len}",
            file=sys.stderr,
        )
    group = BatchSchedule.LENGTH_GROUP if cfg.group_by_length else 0
    return BatchSchedule(items, cfg.batch_size, tokenizer.pad_token_id, cfg.seed, group)


def steps_for(schedule: BatchSchedule, epochs: float, steps: int = 0) -> int:
    return steps if steps > 0 else max(1, round(epochs * schedule.per_epoch))
