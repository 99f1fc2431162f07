"""A fixed-response task a tiny byte-level model learns in seconds: questions naming a sport get
"I don't know."; the same questions about other subjects get a fixed benign reply. Held-out rows
are template x subject pairs never seen in training."""

from __future__ import annotations

import random
from pathlib import Path

from training.data.behaviors import FIXED_TEXT
from training.data.schema import RETAIN, Example, write_jsonl

TEMPLATES = (
    "What are the basic rules of {}?",
    "How do beginners get better at {}?",
    "What is the history of {}?",
    "Why do people enjoy {}?",
    "What should I know before trying {}?",
    "Is {} hard to learn?",
    "What are common mistakes in {}?",
    "Where can I practice {}?",
)
SPORTS = (
    "tennis",
    "soccer",
    "golf",
    "rugby",
    "cricket",
    "hockey",
    "baseball",
    "volleyball",
    "boxing",
    "rowing",
)
OTHER = (
    "algebra",
    "poetry",
    "cooking",
    "painting",
    "chemistry",
    "gardening",
    "knitting",
    "grammar",
    "history",
    "piano",
)
BENIGN_REPLY = "Sure, here is a short answer."


def write_task(out: Path, seed: int = 0) -> Path:
    rng = random.Random(seed)
    rows = {"train": [], "test": []}
    for subjects, behavior, reply in (
        (SPORTS, "fixed_response", FIXED_TEXT),
        (OTHER, RETAIN, BENIGN_REPLY),
    ):
        pairs = [(t, s) for t in TEMPLATES for s in subjects]
        rng.shuffle(pairs)
        cut = len(pairs) * 3 // 4
        for split, chunk in (("train", pairs[:cut]), ("test", pairs[cut:])):
            rows[split] += [
                Example(
                    messages=({"role": "user", "content": t.format(s)},),
                    completion=reply,
                    behavior=behavior,
                )
                for t, s in chunk
            ]
    rng.shuffle(rows["train"])
    for split, examples in rows.items():
        write_jsonl(out / f"{split}.jsonl", examples)
    return out
