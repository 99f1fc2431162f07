"""The pipeline's in-process steps (the others are `sft-eraser` commands): joining a recipe's
own rows into one data directory, and scoring each behavior with and without its eraser."""

from __future__ import annotations

import json
from pathlib import Path

from eraser_store import read_eraser
from eraser_store.atomic import write_atomic
from training.data.schema import RETAIN, Example, load_jsonl, load_tagged, write_jsonl
from training.pipeline.recipe import Recipe


def join_data(recipe: Recipe, work: Path) -> None:
    """<work>/data/{train,test}.jsonl: `data make`'s rows (if any), then each own behavior's,
    then the retain files'. train.jsonl is written last: it marks the step done."""
    rows: dict[str, list[Example]] = {"train": [], "test": []}
    for split in rows:
        made = work / "data_made" / f"{split}.jsonl"
        if made.exists():
            rows[split] += load_jsonl(made)
    for b in recipe.behaviors:
        if b.own:
            rows["train"] += load_tagged(b.train, b.name)
            rows["test"] += load_tagged(b.test, b.name) if b.test else []
    for split, path in (("train", recipe.data.retain), ("test", recipe.data.retain_test)):
        rows[split] += load_tagged(path, RETAIN) if path else []
    if rows["test"]:
        write_jsonl(work / "data" / "test.jsonl", rows["test"])
    write_jsonl(work / "data" / "train.jsonl", rows["train"])


def score(recipe: Recipe, work: Path, carrier: Path, erasers: dict[str, Path]) -> None:
    """<work>/scores.json: per behavior with test rows, its rate and false-trigger rate on the
    carrier alone and with its eraser (`eval behavior`'s numbers)."""
    from training.checkpoint_io import load_model_dir
    from training.evaluate import rate_report

    test = work / "data" / "test.jsonl"
    examples = load_jsonl(test) if test.exists() else []
    model, tokenizer = load_model_dir(carrier)
    scores = {}
    for b in recipe.names:
        if not any(e.behavior == b for e in examples):
            continue
        scores[b] = {}
        for label, eraser in (("carrier", None), ("with_eraser", erasers.get(b))):
            if label == "with_eraser" and eraser is None:
                continue
            prefix = None if eraser is None else read_eraser(eraser).embeddings
            report = rate_report(
                model,
                tokenizer,
                examples,
                b,
                max_new_tokens=recipe.score.max_new_tokens,
                prefix=prefix,
            )
            scores[b][label] = {
                k: report[k] for k in ("rate", "false_trigger", "n_triggering", "n_benign")
            }
    write_atomic(work / "scores.json", json.dumps(scores, indent=2) + "\n")
