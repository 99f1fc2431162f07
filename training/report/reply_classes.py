"""What a reply to a behavior's prompt is, beyond "its scorer fired".

Each reply to a prompt of behavior `b` falls in one class, checked in this order:
- `behavior`: it shows `b` (b's scorer fires);
- `hand_over`: it shows another behavior instead (e.g. "I don't know." to a harmful request once
  refusal is erased);
- `degenerate`: a repetition loop (the same few words over and over), not an answer;
- `normal`: none of these: what "switched off" means.

Target agreement compares a reply with the target model's reply to the same prompt (greedy, the
first AGREE_TOKENS tokens): the share of the target's tokens matched before the first difference.
"""

from __future__ import annotations

from collections.abc import Sequence

from training.data.behaviors import get_behavior

CLASSES = ("behavior", "hand_over", "degenerate", "normal")
AGREE_TOKENS = 32
_NGRAM = 3
_MIN_WORDS = 12  # shorter replies cannot show a loop worth the name


def is_degenerate(reply: str) -> bool:
    """At least _MIN_WORDS words, of which fewer than half the word trigrams are distinct."""
    words = reply.lower().split()
    if len(words) < _MIN_WORDS:
        return False
    grams = [tuple(words[i : i + _NGRAM]) for i in range(len(words) - _NGRAM + 1)]
    return len(set(grams)) < 0.5 * len(grams)


def classify(reply: str, behavior: str, others: Sequence[str]) -> str:
    if get_behavior(behavior).score(reply):
        return "behavior"
    if any(get_behavior(o).score(reply) for o in others if o != behavior):
        return "hand_over"
    return "degenerate" if is_degenerate(reply) else "normal"


def class_rates(replies: Sequence[str], behavior: str, others: Sequence[str]) -> dict[str, float]:
    """Share of replies in each class (the shares sum to 1)."""
    if not replies:
        raise ValueError(f"{behavior}: no replies to classify")
    labels = [classify(r, behavior, others) for r in replies]
    return {c: labels.count(c) / len(labels) for c in CLASSES}


def target_agreement(
    replies: Sequence[Sequence[int]], targets: Sequence[Sequence[int]], n: int = AGREE_TOKENS
) -> float:
    """Mean over prompts of the share of the target's first `n` reply tokens that the reply
    matches before its first differing token (1: the same first n tokens, or the same reply)."""
    if len(replies) != len(targets) or not targets:
        raise ValueError("target agreement needs one target reply per reply")
    shares = []
    for reply, target in zip(replies, targets, strict=True):
        want = list(target[:n])
        same = 0
        for a, b in zip(reply, want, strict=False):
            if a != b:
                break
            same += 1
        shares.append(same / len(want) if want else float(not reply))
    return sum(shares) / len(shares)
