"""Build train/dev/test JSONL for a set of behaviors from the built-in prompt sets.

Train is for training, dev for choosing settings, test for scoring a final setting once
(`splits.py`: test fillers appear in neither train nor dev; each set holds out template families).
"""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from eraser_store.atomic import write_atomic
from eraser_store.prompting import chat_prompt_ids
from training.data.behaviors import get_behavior
from training.data.benign_prompts import benign_set, is_lookalike
from training.data.generation import decode_replies, greedy_reply_ids
from training.data.prompt_set import Prompt, PromptSet
from training.data.schema import RETAIN, DataError, Example, write_jsonl
from training.data.splits import SPLITS, split_set

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
    """Where train.jsonl, dev.jsonl, test.jsonl and meta.json are written."""
    n_train: int = 120
    """Triggering rows per behavior in train."""
    n_dev: int = 40
    """Triggering rows per behavior in dev (choose settings here; no filler shared with test)."""
    n_test: int = 40
    """Triggering rows per behavior in test: fillers in neither train nor dev, and the set's
    held-out template families (score a final setting here, once)."""
    n_benign_train: int = 90
    """Benign retain rows in train (completion = the base model's own answer)."""
    n_benign_dev: int = 40
    """Benign rows in dev (false triggers while choosing settings)."""
    n_benign_test: int = 40
    """Benign rows held out for test (false triggers, agreement with the base model)."""
    seed: int = 0
    """Seed of the prompt shuffles and of the train row order."""
    max_new_tokens: int = 64
    """Length cap of the base model's greedy answers (rows on an answer cut there are marked
    `cut`: trained without an end-of-turn token)."""


def _identity(answer: str) -> str:
    return answer


def make_dataset(cfg: MakeDataConfig, answer_fn: AnswerFn) -> dict[str, Path]:
    """Write train.jsonl, dev.jsonl, test.jsonl and meta.json into cfg.out_dir; return their
    paths. `answer_fn` maps user prompts to the base model's greedy answers; it is called once.
    """
    if not cfg.behaviors:
        raise DataError("make-data: no behaviors given")
    if len(set(cfg.behaviors)) != len(cfg.behaviors):
        raise DataError(f"make-data: behaviors listed twice: {cfg.behaviors}")
    behaviors = [get_behavior(name) for name in cfg.behaviors]
    own = [b.name for b in behaviors if b.triggers is None]
    if own:
        raise DataError(f"make-data: {', '.join(own)} bring their own rows (built-in ones only)")

    # (split, tag, prompts, target, uses_answer) for every set; the base answers come in one call,
    # asked only where the target uses them (generation is most of this job's time).
    sets: list[tuple[str, str, list[Prompt], Callable[[str], str], bool]] = []
    splits: dict[str, dict] = {}
    trigger_sizes = {"train": cfg.n_train, "dev": cfg.n_dev, "test": cfg.n_test}
    benign_sizes = {"train": cfg.n_benign_train, "dev": cfg.n_benign_dev, "test": cfg.n_benign_test}
    groups = [(b.name, b.triggers(), trigger_sizes, b.target, b.uses_answer) for b in behaviors]
    groups.append((RETAIN, benign_set(), benign_sizes, _identity, True))
    for tag, prompt_set, sizes, target, uses in groups:
        drawn = split_set(prompt_set, sizes, cfg.seed)
        sets += [(split, tag, drawn.prompts[split], target, uses) for split in SPLITS]
        splits[tag] = _split_meta(prompt_set, drawn.prompts, drawn.fillers)

    asked = [p.text for _, _, prompts, _, uses in sets if uses for p in prompts]
    answers = list(answer_fn(asked)) if asked else []
    if len(answers) != len(asked):
        raise DataError(f"make-data: {len(asked)} prompts but {len(answers)} answers")

    rows: dict[str, list[Example]] = {split: [] for split in SPLITS}
    dropped: Counter[str] = Counter()
    offset = 0
    for split, tag, prompts, target, uses in sets:
        chunk = answers[offset : offset + len(prompts)] if uses else [Answer("")] * len(prompts)
        offset += len(prompts) if uses else 0
        completions = [target(a.text).strip() for a in chunk]
        # An empty answer (model stopped at once) is not a learnable completion.
        dropped[f"{split}/{tag}"] += completions.count("")
        rows[split] += [
            Example(({"role": "user", "content": p.text},), completion=c, behavior=tag, cut=a.cut)
            for p, c, a in zip(prompts, completions, chunk, strict=True)
            if c
        ]
    if sum(dropped.values()):
        log.warning("dropped rows with empty completions: %s", dict(+dropped))
    random.Random(f"{cfg.seed}:order").shuffle(rows["train"])

    out_dir = Path(cfg.out_dir)
    paths = {split: write_jsonl(out_dir / f"{split}.jsonl", rows[split]) for split in SPLITS}
    meta = {
        "config": {**asdict(cfg), "out_dir": str(cfg.out_dir)},
        "behaviors": {b.name: b.description for b in behaviors},
        "counts": {s: dict(Counter(ex.behavior for ex in rows[s])) for s in rows},
        "cut": {s: dict(Counter(ex.behavior for ex in rows[s] if ex.cut)) for s in rows},
        "dropped_empty": dict(+dropped),
        "splits": splits,
    }
    paths["meta"] = write_atomic(out_dir / "meta.json", json.dumps(meta, indent=2) + "\n")
    return paths


def _split_meta(ps: PromptSet, drawn: dict[str, list[Prompt]], fillers: dict) -> dict:
    """Where a set's groups went: filler groups per split, the families drawn, the held-out ones."""
    meta = {
        "test_families": list(ps.test_families),
        "families": {s: sorted({p.family for p in drawn[s]}) for s in SPLITS},
        "fillers": fillers,
    }
    if ps.name == RETAIN:
        meta["lookalikes"] = {s: sum(map(is_lookalike, drawn[s])) for s in SPLITS}
    return meta


def model_answer_fn(model, tokenizer, max_new_tokens: int, batch_size: int = 16) -> AnswerFn:
    """An answer_fn that asks `model` each prompt as a single user turn."""

    def answer(prompts: list[str]) -> list[Answer]:
        encoded = [chat_prompt_ids(tokenizer, [{"role": "user", "content": p}]) for p in prompts]
        ids = greedy_reply_ids(model, tokenizer, encoded, max_new_tokens, batch_size, progress=True)
        return [Answer(text, cut) for text, cut in decode_replies(tokenizer, ids)]

    return answer
