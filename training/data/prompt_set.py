"""Prompts with the groups a split holds out whole: the filler (topic) and the template family.

A prompt's `filler` is the slot value it was built from (an action, a topic, a name) or, for a
written prompt, the prompt itself; `family` is the phrasing it shares with its siblings (a set
of templates, or a kind of written prompt). `make.py` puts every filler in one split only and
keeps each set's `test_families` out of train and dev, so test measures new topics in at least
one new phrasing, not the templates the model was trained on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Prompt:
    text: str
    """The user turn."""
    filler: str
    """Topic group: whole groups go to one split (train, dev or test)."""
    family: str
    """Template family (phrasing): a set's test families never appear in train or dev."""


@dataclass(frozen=True)
class PromptSet:
    """Every prompt of one behavior (or of the benign set), in a deterministic order."""

    name: str
    prompts: tuple[Prompt, ...]
    test_families: tuple[str, ...]
    """Families held out for test: no train or dev prompt has one of them."""


def expand(family: str, templates: Iterable[str], fillers: Iterable[str]) -> list[Prompt]:
    """Each template of `family` applied to each filler."""
    templates = tuple(templates)
    return [Prompt(t.format(f), f, family) for f in fillers for t in templates]


def expand_families(families: Mapping[str, Iterable[str]], fillers: Iterable[str]) -> list[Prompt]:
    """Every family's templates applied to the same fillers (one topic, many phrasings)."""
    fillers = tuple(fillers)
    return [p for family, templates in families.items() for p in expand(family, templates, fillers)]


def written(family: str, texts: Iterable[str]) -> list[Prompt]:
    """Prompts written out whole: each is its own filler group."""
    return [Prompt(t, t, family) for t in texts]


def unique(*groups: Iterable[Prompt]) -> tuple[Prompt, ...]:
    """The prompts in order, the first of each text kept."""
    seen: dict[str, Prompt] = {}
    for group in groups:
        for p in group:
            seen.setdefault(p.text, p)
    return tuple(seen.values())


def prompt_set(name: str, test_families: tuple[str, ...], *groups: Iterable[Prompt]) -> PromptSet:
    prompts = unique(*groups)
    families = {p.family for p in prompts}
    missing = [f for f in test_families if f not in families]
    if missing:  # a typo would silently hold out nothing
        raise ValueError(f"prompt set {name}: test families {missing} have no prompts")
    return PromptSet(name, prompts, test_families)
