"""Labelled prompts written elsewhere (e.g. XSTest): per label, how often each behavior fires.

A CSV or JSONL file with one column naming the prompt and one naming its label (XSTest:
`prompt`, `label` = safe / unsafe). Nothing is trained on such a set; `eval report --prompts` and
`eval prompts` score it: for refusal on XSTest, the rate on `unsafe` is the refusal rate and the
rate on `safe` the false-refusal rate.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from training.data.schema import DataError, jsonl_rows, read_text
from training.data.scoring import behavior_rate

FORMATS = (".csv", ".jsonl")


@dataclass(frozen=True)
class LabelledPrompts:
    path: Path
    texts: list[str]
    labels: list[str]
    text_column: str
    label_column: str

    def messages(self) -> list[list[dict]]:
        return [[{"role": "user", "content": t}] for t in self.texts]

    def counts(self) -> dict[str, int]:
        return {label: self.labels.count(label) for label in sorted(set(self.labels))}


def _records(path: Path) -> tuple[list[tuple[str, dict]], list[str]]:
    """(where, record) per row, and the columns seen, from a CSV or JSONL file."""
    text = read_text(path)
    if path.suffix == ".csv":
        reader = csv.DictReader(text.splitlines())
        rows = [(f"{path}:{i}", row) for i, row in enumerate(reader, start=2)]
        return rows, list(reader.fieldnames or [])
    rows, columns = jsonl_rows(path, text), {}
    for where, row in rows:
        if not isinstance(row, dict):
            raise DataError(f"{where}: row must be a JSON object, got {type(row).__name__}")
        columns |= dict.fromkeys(row)
    return rows, list(columns)


def load_labelled(path: Path, text_column: str = "prompt", label_column: str = "label"):
    """The prompts and labels of a CSV or JSONL file; DataError naming the file (and line or
    column) when the format, a column or a value is wrong."""
    path = Path(path)
    if path.suffix not in FORMATS:
        raise DataError(f"{path}: expected a .csv or .jsonl file of labelled prompts")
    rows, columns = _records(path)
    if not rows:
        raise DataError(f"{path}: no rows")
    for column, flag in ((text_column, "--text-column"), (label_column, "--label-column")):
        if column not in columns:
            seen = ", ".join(columns) or "none"
            raise DataError(f"{path}: no column {column!r} ({flag}; columns: {seen})")
    texts, labels = [], []
    for where, row in rows:
        values = []
        for column in (text_column, label_column):
            value = row.get(column)
            if not isinstance(value, str) or not value.strip():
                raise DataError(f"{where}: column {column!r} is empty or not text")
            values.append(value.strip())
        texts.append(values[0])
        labels.append(values[1])
    return LabelledPrompts(path, texts, labels, text_column, label_column)


def label_rates(prompts: LabelledPrompts, behaviors: list[str], replies: list[str]) -> dict:
    """{label: {behavior: share of that label's replies showing the behavior}}."""
    by_label: dict[str, list[str]] = {}
    for label, reply in zip(prompts.labels, replies, strict=True):
        by_label.setdefault(label, []).append(reply)
    return {
        label: {b: behavior_rate(b, by_label[label]) for b in behaviors}
        for label in sorted(by_label)
    }
