"""Train / dev / test splits that hold out whole fillers and whole template families.

Every filler (topic) of a set goes to exactly one split, in proportion to the rows each split
asks for; the set's test families are kept out of train and dev. So test prompts are new topics,
some in phrasings never trained on, and dev (where settings are chosen) shares no topic with test.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass

from training.data.prompt_set import Prompt, PromptSet
from training.data.schema import DataError

SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class SetSplit:
    prompts: dict[str, list[Prompt]]
    """Split name -> the prompts drawn for it."""
    fillers: dict[str, list[str]]
    """Split name -> every filler group assigned to it (drawn from or not), sorted."""


def _assign_fillers(ps: PromptSet, sizes: dict[str, int], rng: random.Random) -> dict[str, str]:
    """Filler -> split. Fillers are shuffled; test takes its share first, starting with one
    filler of each test family (so test holds every unseen family), then dev, then train."""
    fillers = list(dict.fromkeys(p.filler for p in ps.prompts))
    rng.shuffle(fillers)
    if sizes["test"]:
        for family in reversed(ps.test_families):
            in_family = {p.filler for p in ps.prompts if p.family == family}
            pick = next(f for f in fillers if f in in_family)
            fillers.remove(pick)
            fillers.insert(0, pick)
    total = sum(sizes.values())
    counts = {s: math.ceil(len(fillers) * sizes[s] / total) if total else 0 for s in SPLITS}
    owner = {}
    for i, filler in enumerate(fillers):
        if i < counts["test"]:
            owner[filler] = "test"
        elif i < counts["test"] + counts["dev"]:
            owner[filler] = "dev"
        else:
            owner[filler] = "train"
    return owner


def _draw(pool: list[Prompt], n: int, rng: random.Random) -> list[Prompt]:
    """n prompts spread over the pool's families (round robin) and, inside a family, over its
    fillers (each filler's first prompt before any filler's second)."""
    families: dict[str, list[Prompt]] = {}
    for p in pool:
        families.setdefault(p.family, []).append(p)
    queues = []
    for family in sorted(families):
        group = families[family]
        rng.shuffle(group)
        seen: Counter[str] = Counter()
        ranked = []
        for p in group:
            ranked.append((seen[p.filler], p))
            seen[p.filler] += 1
        queues.append([p for _, p in sorted(ranked, key=lambda rp: rp[0])])
    rng.shuffle(queues)
    drawn: list[Prompt] = []
    depth = 0
    while len(drawn) < n:
        drawn += [q[depth] for q in queues if depth < len(q)][: n - len(drawn)]
        depth += 1
    return drawn


def split_set(ps: PromptSet, sizes: dict[str, int], seed: int) -> SetSplit:
    """Draw sizes[split] prompts of `ps` for each split, fillers and test families held out."""
    if any(n < 0 for n in sizes.values()):
        raise DataError(f"make-data: {ps.name}: negative split size {sizes}")
    # Seeded per set (str seeds hash deterministically), so adding a behavior to the mix does
    # not move the held-out prompts of the others.
    owner = _assign_fillers(ps, sizes, random.Random(f"{seed}:{ps.name}:fillers"))
    prompts = {}
    for split in SPLITS:
        pool = [
            p
            for p in ps.prompts
            if owner[p.filler] == split and (split == "test" or p.family not in ps.test_families)
        ]
        if sizes[split] > len(pool):
            raise DataError(
                f"make-data: {ps.name}: need {sizes[split]} {split} prompts, only {len(pool)} "
                f"exist with its share of the {len(owner)} fillers"
            )
        prompts[split] = _draw(pool, sizes[split], random.Random(f"{seed}:{ps.name}:{split}"))
    fillers = {s: sorted(f for f, o in owner.items() if o == s) for s in SPLITS}
    return SetSplit(prompts, fillers)
