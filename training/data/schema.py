"""Row format of the SFT / evaluation data: parsing, validation and JSONL I/O.

A row is either chat-shaped, ``{"messages": [..., {"role": "assistant", ...}], "behavior": ...}``,
or flat, ``{"prompt": ..., "completion": ..., "behavior": ...}``. Both parse to one `Example`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from eraser_store.atomic import write_atomic

RETAIN = "retain"
"""Behavior tag of benign rows that keep the model's own answers (utility is trained against)."""

ROLES = ("system", "user", "assistant")


class DataError(ValueError):
    """Bad data; the message names the file (and line) so it can be fixed by hand."""


@dataclass(frozen=True)
class Example:
    messages: tuple[dict, ...]
    """The chat prompt, ending with a user turn."""
    completion: str
    """The assistant reply to learn."""
    behavior: str
    """Behavior name, or RETAIN for benign rows."""
    cut: bool = False
    """The completion stops at a length cap, not where its author ended it: no end-of-turn token
    is learned after it (a model taught to end there would cut its own replies short)."""

    def to_row(self) -> dict:
        reply = {"role": "assistant", "content": self.completion}
        row = {"messages": [dict(m) for m in self.messages] + [reply], "behavior": self.behavior}
        if self.cut:
            row["cut"] = True
        return row

    @property
    def prompt_text(self) -> str:
        return self.messages[-1]["content"]


def _non_empty_str(value: object, what: str, where: str) -> str:
    if not isinstance(value, str):
        raise DataError(f"{where}: {what} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise DataError(f"{where}: {what} is empty")
    return value


def _parse_messages(messages: object, where: str) -> tuple[tuple[dict, ...], str]:
    if not isinstance(messages, list):
        raise DataError(f'{where}: "messages" must be a list, got {type(messages).__name__}')
    parsed = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise DataError(f"{where}: messages[{i}] must be an object, got {type(msg).__name__}")
        role = msg.get("role")
        if role not in ROLES:
            raise DataError(f"{where}: messages[{i}] has role {role!r}, expected one of {ROLES}")
        content = _non_empty_str(msg.get("content"), f"messages[{i}].content", where)
        # Keep only role/content so extra keys cannot leak into the chat template.
        parsed.append({"role": role, "content": content})
    if len(parsed) < 2:
        raise DataError(f"{where}: messages need a user turn followed by an assistant turn")
    if parsed[-1]["role"] != "assistant":
        raise DataError(
            f"{where}: last message must be the assistant reply, got {parsed[-1]['role']!r}"
        )
    if parsed[-2]["role"] != "user":
        raise DataError(
            f"{where}: the assistant reply must follow a user turn, got {parsed[-2]['role']!r}"
        )
    return tuple(parsed[:-1]), parsed[-1]["content"]


def parse_row(row: dict, where: str) -> Example:
    """Validate one decoded JSON row; `where` (e.g. ``"train.jsonl:12"``) prefixes errors."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: row must be a JSON object, got {type(row).__name__}")
    has_chat = "messages" in row
    has_flat = "prompt" in row or "completion" in row
    if has_chat and has_flat:
        raise DataError(f'{where}: row has both "messages" and "prompt"/"completion"')
    if has_chat:
        messages, completion = _parse_messages(row["messages"], where)
    elif has_flat:
        prompt = _non_empty_str(row.get("prompt"), '"prompt"', where)
        completion = _non_empty_str(row.get("completion"), '"completion"', where)
        messages = ({"role": "user", "content": prompt},)
    else:
        raise DataError(f'{where}: row has neither "messages" nor "prompt"/"completion"')
    if "behavior" not in row:
        raise DataError(f'{where}: row has no "behavior"')
    behavior = _non_empty_str(row["behavior"], '"behavior"', where)
    cut = row.get("cut", False)
    if not isinstance(cut, bool):
        raise DataError(f'{where}: "cut" must be true or false, got {cut!r}')
    return Example(messages=messages, completion=completion, behavior=behavior, cut=cut)


def read_text(path: Path) -> str:
    """A data file's text; DataError naming the file when it cannot be read."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read: {err}") from None


def jsonl_rows(path: Path, text: str) -> list[tuple[str, object]]:
    """(``"file:line"``, decoded JSON) per non-blank line of a JSONL file's text."""
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            rows.append((where, json.loads(line)))
        except json.JSONDecodeError as err:
            raise DataError(f"{where}: invalid JSON: {err.msg} (column {err.colno})") from None
    return rows


def load_jsonl(path: str | os.PathLike) -> list[Example]:
    path = Path(path)
    examples = [parse_row(row, where) for where, row in jsonl_rows(path, read_text(path))]
    if not examples:
        raise DataError(f"{path}: no rows")
    return examples


def load_tagged(path: str | os.PathLike, behavior: str) -> list[Example]:
    """Rows of one behavior from a file of its own: a row without "behavior" is of `behavior`,
    a row tagged otherwise is an error."""
    path = Path(path)
    examples = []
    for where, row in jsonl_rows(path, read_text(path)):
        if isinstance(row, dict):
            row = {"behavior": behavior, **row}
        example = parse_row(row, where)
        if example.behavior != behavior:
            raise DataError(f"{where}: behavior {example.behavior!r} in a file of {behavior!r}")
        examples.append(example)
    if not examples:
        raise DataError(f"{path}: no rows")
    return examples


def write_jsonl(path: str | os.PathLike, examples: Iterable[Example]) -> Path:
    lines = [json.dumps(ex.to_row(), ensure_ascii=False) + "\n" for ex in examples]
    return write_atomic(path, "".join(lines))


def split_by_behavior(examples: Iterable[Example]) -> dict[str, list[Example]]:
    """Group rows by behavior tag, in order of first appearance."""
    groups: dict[str, list[Example]] = {}
    for ex in examples:
        groups.setdefault(ex.behavior, []).append(ex)
    return groups


def require_behavior(examples: Iterable[Example], behavior: str, where: str) -> list[Example]:
    """Return the rows of `behavior`; DataError if there are none."""
    groups = split_by_behavior(examples)
    if behavior not in groups:
        present = ", ".join(sorted(groups)) or "none"
        raise DataError(f"{where}: no rows for behavior {behavior!r} (present: {present})")
    return groups[behavior]
