"""Declarative reply scorers for behaviors a recipe declares: one rule, no code edit.

A rule is a one-key table: ``{starts_with = "Arr"}``, ``{contains = "matey"}``,
``{regex = "^[A-Z ]+$"}``, ``{upper_ratio = 0.9}`` or ``{python = "module:function"}`` (a
function of the reply returning a bool).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable

from training.data.behaviors import upper_share
from training.data.schema import DataError

Scorer = Callable[[str], bool]


def _starts_with(prefix: str) -> Scorer:
    return lambda reply: reply.lstrip().startswith(prefix)


def _contains(text: str) -> Scorer:
    return lambda reply: text in reply


def _regex(pattern: str) -> Scorer:
    try:
        compiled = re.compile(pattern)
    except re.error as e:
        raise DataError(f"regex {pattern!r}: {e}") from None
    return lambda reply: compiled.search(reply) is not None


def _upper_ratio(share: float) -> Scorer:
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0 < share <= 1:
        raise DataError(f"upper_ratio must be a number in (0, 1], got {share!r}")
    return lambda reply: upper_share(reply) >= share


def _python(ref: str) -> Scorer:
    module, _, name = ref.partition(":")
    if not module or not name:
        raise DataError(f"python scorer {ref!r}: expected module:function")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise DataError(f"python scorer {ref!r}: {e}") from None
    if not callable(fn):
        raise DataError(f"python scorer {ref!r} is not a function")
    return lambda reply: bool(fn(reply))


RULES: dict[str, Callable[..., Scorer]] = {
    "starts_with": _starts_with,
    "contains": _contains,
    "regex": _regex,
    "upper_ratio": _upper_ratio,
    "python": _python,
}


def make_scorer(rule: dict) -> Scorer:
    """The scorer of a one-key rule table; DataError naming what is wrong."""
    if not isinstance(rule, dict) or len(rule) != 1:
        raise DataError(f"a scorer is one of {{{' | '.join(RULES)} = ...}}, got {rule!r}")
    ((kind, value),) = rule.items()
    if kind not in RULES:
        raise DataError(f"unknown scorer {kind!r}; choose one of {', '.join(RULES)}")
    if kind != "upper_ratio" and (not isinstance(value, str) or not value):
        raise DataError(f"scorer {kind} needs a non-empty string, got {value!r}")
    return RULES[kind](value)
