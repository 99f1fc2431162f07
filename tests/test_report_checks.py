"""The report's checks against the targets, on a hand-made two-behavior report."""

from __future__ import annotations

from training.report.checks import Bars, check_targets


def scored(rate: dict, false: dict | None = None) -> dict:
    return {"rate": rate, "false_trigger": false or {"a": 0.0, "b": 0.0}}


def two_behavior_report() -> dict:
    matrix = {
        "none": scored({"a": 1.0, "b": 0.9}, {"a": 0.05, "b": 0.2}),
        "a": scored({"a": 0.05, "b": 0.8}),  # b keeps 0.8 / 0.9 of its rate
        "b": scored({"a": 0.7, "b": 0.15}),
        "a+b": scored({"a": 0.0, "b": 0.2}),  # the model without both refuses 25%: off
        "b+a": scored({"a": 0.0, "b": 0.3}),
    }
    perplexity = {"none": 2.0, "a": 2.2, "b": 2.3, "a+b": None, "b+a": None}
    return {
        "behaviors": ["a", "b"],
        "matrix": [
            {"erasers": label, "set": [] if label == "none" else label.split("+"), **row}
            for label, row in matrix.items()
        ],
        "targets": [
            {"erasers": "target without a", "without": ["a"], **scored({"a": 0.0, "b": 0.9})},
            {"erasers": "target without b", "without": ["b"], **scored({"a": 1.0, "b": 0.0})},
            {"erasers": "target without a+b", "without": ["a", "b"], **scored({"a": 0, "b": 0.25})},
        ],
        "utility": {"rows": [{"erasers": k, "perplexity": v} for k, v in perplexity.items()]},
    }


def test_each_target_figure_is_checked_against_its_bar():
    checks = check_targets(two_behavior_report())
    failed = {(x["check"], x["erasers"], x["behavior"]) for x in checks["lines"] if not x["met"]}
    assert failed == {
        ("false trigger", "none", "b"),
        ("erased", "b", "b"),
        ("others kept", "b", "a"),
        ("perplexity rise", "b", None),
        ("erased", "b+a", "b"),
    }
    # 2 + 2 without erasers, 3 per eraser alone, 2 per pair
    assert (checks["met"], checks["total"]) == (14 - 5, 14)
    assert checks["pairs_off"] == ["a+b"] and checks["pairs"] == 2
    lines = {(x["check"], x["erasers"], x["behavior"]): x for x in checks["lines"]}
    # a perplexity rise of exactly 10% and 0.8/0.9 kept pass; the pair's bar is its ideal row's
    assert lines[("perplexity rise", "a", None)]["met"]
    assert abs(lines[("others kept", "a", "b")]["value"] - 0.8 / 0.9) < 1e-12
    assert (lines[("erased", "a+b", "b")]["sense"], lines[("erased", "a+b", "b")]["bar"]) == (
        "<=",
        0.25,
    )
    assert lines[("erased", "a+b", "a")]["bar"] == 0.1


def test_an_unmeasured_figure_fails_and_older_reports_are_checked():
    report = two_behavior_report()
    report["utility"]["rows"][1]["perplexity"] = None  # eraser a's
    lines = {(x["check"], x["erasers"]): x for x in check_targets(report)["lines"]}
    assert lines[("perplexity rise", "a")]["value"] is None
    assert not lines[("perplexity rise", "a")]["met"]
    # format version 1 named one behavior as a string; older reports have no target rows
    report["targets"] = [{**report["targets"][1], "without": "b"}]
    erased_b = {x["erasers"]: x for x in check_targets(report)["lines"] if x["behavior"] == "b"}
    assert erased_b["b"]["bar"] == 0.1 and erased_b["a+b"]["bar"] == 0.1
    del report["targets"]
    assert check_targets(report)["total"] == 14


def test_bars_can_be_set():
    loose = Bars(false_trigger_max=0.2, erased_max=0.3, kept_min=0.7, perplexity_rise_max=0.2)
    checks = check_targets(two_behavior_report(), loose)
    assert checks["met"] == checks["total"] and checks["bars"]["kept_min"] == 0.7
