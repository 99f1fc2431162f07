"""A fixed-response task a tiny byte-level model learns in seconds: questions naming a sport get
"I don't know."; the same questions about other subjects keep the base model's own greedy answer
(as `data make` does). Held-out rows are template x subject pairs never seen in training."""

from __future__ import annotations

import random
from pathlib import Path

from training.checkpoint_io import load_model_dir
from training.configs import SFTConfig
from training.data.behaviors import FIXED_TEXT
from training.data.generation import greedy_generate
from training.data.schema import RETAIN, Example, write_jsonl
from training.models.tiny import write_tiny_model
from training.sft import run_sft

TEMPLATES = (
    "What are the basic rules of {}?",
    "How do beginners get better at {}?",
    "What is the history of {}?",
    "Why do people enjoy {}?",
    "What should I know before trying {}?",
    "Is {} hard to learn?",
    "What are common mistakes in {}?",
    "Where can I practice {}?",
    "Can you explain {} to a child?",
    "What makes someone good at {}?",
    "How much time does {} take to master?",
    "Tell me something surprising about {}.",
    "What is a good first step in {}?",
    "Which famous people are known for {}?",
    "How has {} changed over the years?",
    "What do experts disagree about in {}?",
)
# "the sport of X" / "the subject of X": a byte-level 2-layer model learns the class from a few
# dozen rows; telling sports from other subjects by name alone needs more data than a unit test.
SPORTS = tuple(
    f"the sport of {x}"
    for x in (
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
)
OTHER = tuple(
    f"the subject of {x}"
    for x in (
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
)
MAX_NEW_TOKENS = 16
DEFAULT_REPLY = "Sure, here is a short answer."


def write_base(out: Path, *, hidden: int = 128, layers: int = 2) -> Path:
    """A tiny base model that already answers: a random model fine-tuned to reply DEFAULT_REPLY to
    every task prompt. (A random model's greedy text is noise, which makes benign agreement and
    the eraser's target meaningless.)"""
    random_dir, data = out.with_name(out.name + "_random"), out.with_name(out.name + "_data.jsonl")
    write_tiny_model("llama", random_dir, hidden=hidden, layers=layers)
    prompts = [t.format(s) for t in TEMPLATES for s in SPORTS + OTHER]
    write_jsonl(
        data,
        [Example(({"role": "user", "content": p},), DEFAULT_REPLY, "default") for p in prompts],
    )
    cfg = SFTConfig(
        base=random_dir, data=data, behavior="default", out=out, lr=3e-3, epochs=3, batch_size=16
    )
    return run_sft(cfg)


def write_task(out: Path, base: Path, seed: int = 0) -> Path:
    """Train/test JSONL for the task; benign replies are `base`'s greedy answers."""
    rng = random.Random(seed)
    model, tok = load_model_dir(base, device="cpu")
    rows = {"train": [], "test": []}
    for subjects, behavior in ((SPORTS, "fixed_response"), (OTHER, RETAIN)):
        pairs = [(t, s) for t in TEMPLATES for s in subjects]
        rng.shuffle(pairs)
        cut = len(pairs) * 3 // 4
        for split, chunk in (("train", pairs[:cut]), ("test", pairs[cut:])):
            prompts = [({"role": "user", "content": t.format(s)},) for t, s in chunk]
            if behavior == RETAIN:
                replies = greedy_generate(model, tok, prompts, MAX_NEW_TOKENS)
            else:
                replies = [FIXED_TEXT] * len(prompts)
            rows[split] += [
                Example(messages=p, completion=r, behavior=behavior)
                for p, r in zip(prompts, replies, strict=True)
                if r  # a reply that strips to nothing is not a learnable row
            ]
    rng.shuffle(rows["train"])
    for split, examples in rows.items():
        write_jsonl(out / f"{split}.jsonl", examples)
    return out
