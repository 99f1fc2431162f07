"""Build train/test JSONL for a set of behaviors from the built-in prompt sets."""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from eraser_store.prompting import chat_prompt_ids
from training.data.behaviors import benign_prompts, get_behavior
from training.data.generation import decode_replies, greedy_reply_ids
from training.data.schema import RETAIN, DataError, Example, write_jsonl, write_text_atomic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Answer:
    """The base model's answer to a prompt."""

    text: str
    cut: bool = False
    """It hit the length cap before the model ended it (the rows built on it are marked cut)."""


AnswerFn = Callable[[list[str]], list[Answer]]


@dataclass
class MakeDataConfig:
    behaviors: list[str]
    """Names of built-in behaviors to include (see behaviors.BEHAVIORS)."""
    out_dir: Path
    """Where train.jsonl, test.jsonl and meta.json are written."""
    n_train: int = 120
    """Triggering rows per behavior in train."""
    n_test: int = 40
    """Triggering rows per behavior held out for test (no prompt shared with train)."""
    n_benign_train: int = 90
    """Benign retain rows in train (completion = the base model's own answer)."""
    n_benign_test: int = 40
    """Benign rows held out for test (false triggers, agreement with the base model)."""
    seed: int = 0
    """Seed of the prompt shuffles and of the train row order."""
    max_new_tokens: int = 64
    """Length cap of the base model's greedy answers (rows on an answer cut there are marked
    `cut`: trained without an end-of-turn token)."""


def _split(
    prompts: list[str], n_train: int, n_test: int, name: str, seed: int
) -> tuple[list[str], list[str]]:
    """Disjoint train/test slices of a seeded shuffle of `prompts`."""
    if n_train < 0 or n_test < 0:
        raise DataError(f"make-data: {name}: negative split size (train {n_train}, test {n_test})")
    if n_train + n_test > len(prompts):
        raise DataError(
            f"make-data: {name}: need {n_train} train + {n_test} test prompts,"
            f" only {len(prompts)} exist"
        )
    shuffled = list(prompts)
    # Seeded per set (str seeds hash deterministically), so adding a behavior to the mix does
    # not move the held-out prompts of the others.
    random.Random(f"{seed}:{name}").shuffle(shuffled)
    return shuffled[:n_train], shuffled[n_train : n_train + n_test]


def _identity(answer: str) -> str:
    return answer


def make_dataset(cfg: MakeDataConfig, answer_fn: AnswerFn) -> dict[str, Path]:
    """Write train.jsonl, test.jsonl and meta.json into cfg.out_dir; return their paths.

    `answer_fn` maps user prompts to the base model's greedy answers; it is called once.
    """
    if not cfg.behaviors:
        raise DataError("make-data: no behaviors given")
    if len(set(cfg.behaviors)) != len(cfg.behaviors):
        raise DataError(f"make-data: behaviors listed twice: {cfg.behaviors}")
    behaviors = [get_behavior(name) for name in cfg.behaviors]

    # (split, tag, prompts, target, uses_answer) for every set; the base answers come in one call,
    # asked only where the target uses them (generation is most of this job's time).
    sets: list[tuple[str, str, list[str], Callable[[str], str], bool]] = []
    for b in behaviors:
        train, test = _split(b.triggers(), cfg.n_train, cfg.n_test, b.name, cfg.seed)
        sets += [
            (split, b.name, ps, b.target, b.uses_answer)
            for split, ps in (("train", train), ("test", test))
        ]
    train, test = _split(benign_prompts(), cfg.n_benign_train, cfg.n_benign_test, RETAIN, cfg.seed)
    sets += [("train", RETAIN, train, _identity, True), ("test", RETAIN, test, _identity, True)]

    asked = [p for _, _, prompts, _, uses in sets if uses for p in prompts]
    answers = list(answer_fn(asked)) if asked else []
    if len(answers) != len(asked):
        raise DataError(f"make-data: {len(asked)} prompts but {len(answers)} answers")

    rows: dict[str, list[Example]] = {"train": [], "test": []}
    dropped: Counter[str] = Counter()
    offset = 0
    for split, tag, prompts, target, uses in sets:
        chunk = answers[offset : offset + len(prompts)] if uses else [Answer("")] * len(prompts)
        offset += len(prompts) if uses else 0
        completions = [target(a.text).strip() for a in chunk]
        # An empty answer (model stopped at once) is not a learnable completion.
        dropped[f"{split}/{tag}"] += completions.count("")
        rows[split] += [
            Example(({"role": "user", "content": p},), completion=c, behavior=tag, cut=a.cut)
            for p, c, a in zip(prompts, completions, chunk, strict=True)
            if c
        ]
    if sum(dropped.values()):
        log.warning("dropped rows with empty completions: %s", dict(+dropped))
    random.Random(f"{cfg.seed}:order").shuffle(rows["train"])

    out_dir = Path(cfg.out_dir)
    paths = {
        "train": write_jsonl(out_dir / "train.jsonl", rows["train"]),
        "test": write_jsonl(out_dir / "test.jsonl", rows["test"]),
    }
    meta = {
        "config": {**asdict(cfg), "out_dir": str(cfg.out_dir)},
        "behaviors": {b.name: b.description for b in behaviors},
        "counts": {s: dict(Counter(ex.behavior for ex in rows[s])) for s in rows},
        "cut": {s: dict(Counter(ex.behavior for ex in rows[s] if ex.cut)) for s in rows},
        "dropped_empty": dict(+dropped),
    }
    paths["meta"] = write_text_atomic(out_dir / "meta.json", json.dumps(meta, indent=2) + "\n")
    return paths


def model_answer_fn(model, tokenizer, max_new_tokens: int, batch_size: int = 16) -> AnswerFn:
    """An answer_fn that asks `model` each prompt as a single user turn."""

    def answer(prompts: list[str]) -> list[Answer]:
        encoded = [chat_prompt_ids(tokenizer, [{"role": "user", "content": p}]) for p in prompts]
        ids = greedy_reply_ids(model, tokenizer, encoded, max_new_tokens, batch_size, progress=True)
        return [Answer(text, cut) for text, cut in decode_replies(tokenizer, ids)]

    return answer
