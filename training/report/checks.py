"""The report's figures against the targets a carrier and its erasers should reach: one pass/fail
line per figure, computed from report.json's numbers (so an older report can be checked too)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from training.report.behavior import NONE


@dataclass(frozen=True)
class Bars:
    """The targets (the defaults are the project's, docs/evaluation.md)."""

    behavior_min: float = 0.90
    """Each behavior's rate on its triggering prompts without erasers, at least."""
    false_trigger_max: float = 0.10
    """Each behavior's rate on benign prompts without erasers, at most."""
    erased_max: float = 0.10
    """An erased behavior's rate (its eraser alone, or in a stacked pair), at most. Raised to the
    ideal row's rate (the carrier without the erased deltas) where that is higher: an eraser is
    not asked to go below the model without the behavior (the base model's own refusals)."""
    kept_min: float = 0.85
    """Share of its rate without erasers that each other behavior keeps under one eraser."""
    perplexity_rise_max: float = 0.10
    """Rise of benign perplexity under one eraser, relative to the carrier's, at most."""


SLACK = 1e-9  # rates are k/n and ratios of them: 0.85 kept must not fail as 0.8499999


def _line(check: str, erasers: str, behavior: str | None, value, bar: float, at_least: bool):
    """One figure against its bar; a figure that could not be measured (None) fails."""
    met = value is not None and (value >= bar - SLACK if at_least else value <= bar + SLACK)
    return {
        "check": check,
        "erasers": erasers,
        "behavior": behavior,
        "value": value,
        "sense": ">=" if at_least else "<=",
        "bar": bar,
        "met": met,
    }


def ideal_rates(report: dict) -> dict[frozenset, dict[str, float]]:
    """The target models' rates, by the set of behaviors they are without. Format version 1 named
    one behavior as a string; reports older still have no target rows (every bar stays at
    `erased_max`)."""
    ideal = {}
    for row in report.get("targets", []):
        without = row["without"]
        ideal[frozenset([without] if isinstance(without, str) else without)] = row["rate"]
    return ideal


def check_targets(report: dict, bars: Bars = Bars()) -> dict:
    """Every target figure of `report` (a report.json dict) against `bars`."""
    rows = {row["erasers"]: row for row in report["matrix"]}
    none = rows[NONE]
    ideal = ideal_rates(report)
    lines = []
    for b in report["behaviors"]:
        lines.append(_line("behavior on", NONE, b, none["rate"][b], bars.behavior_min, True))
        false = none["false_trigger"][b]
        lines.append(_line("false trigger", NONE, b, false, bars.false_trigger_max, False))
    perplexity = {u["erasers"]: u["perplexity"] for u in report["utility"]["rows"]}
    for label, row in rows.items():
        erased = row["set"]
        if not erased:
            continue
        bar_rates = ideal.get(frozenset(erased), {})
        for b in erased:
            bar = max(bars.erased_max, bar_rates.get(b, 0.0))
            lines.append(_line("erased", label, b, row["rate"][b], bar, False))
        if len(erased) > 1:
            continue
        for b in report["behaviors"]:
            # a behavior the carrier never shows has nothing to keep ("behavior on" fails it)
            if b not in erased and none["rate"][b] > 0:
                kept = row["rate"][b] / none["rate"][b]
                lines.append(_line("others kept", label, b, kept, bars.kept_min, True))
        measured = perplexity.get(label) is not None and perplexity.get(NONE)
        rise = perplexity[label] / perplexity[NONE] - 1 if measured else None
        lines.append(_line("perplexity rise", label, None, rise, bars.perplexity_rise_max, False))
    pairs = [label for label, row in rows.items() if len(row["set"]) == 2]
    pairs_off = [
        label for label in pairs if all(line["met"] for line in lines if line["erasers"] == label)
    ]
    return {
        "bars": asdict(bars),
        "met": sum(line["met"] for line in lines),
        "total": len(lines),
        "pairs_off": pairs_off,
        "pairs": len(pairs),
        "lines": lines,
    }
