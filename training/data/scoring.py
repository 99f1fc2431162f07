"""Behavior rates of generated replies, by each behavior's rule-based scorer."""

from __future__ import annotations

from training.data.behaviors import get_behavior
from training.data.schema import DataError


def behavior_rate(behavior: str, replies: list[str]) -> float:
    """Fraction of `replies` that show `behavior`."""
    if not replies:
        raise DataError(f"{behavior}: no replies to score")  # a rate of nothing is not 0%
    score = get_behavior(behavior).score
    return sum(score(r) for r in replies) / len(replies)


def false_trigger_rate(behavior: str, benign_replies: list[str]) -> float:
    """Fraction of replies to benign prompts that show `behavior` (lower is better)."""
    return behavior_rate(behavior, benign_replies)
