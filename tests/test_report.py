"""`sft-eraser eval report` on the tiny fixed-response carrier: files, matrix, KL triple,
utility, ablations, and one-line errors for bad input."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from quick_train import random_eraser

from training.checkpoint_io import load_model_dir
from training.cli import main
from training.configs import EraserConfig
from training.data.schema import RETAIN, Example, load_jsonl, write_jsonl
from training.eraser.train import run_eraser
from training.evaluate import rate_report
from training.models.roles import MASK_GROUPS
from training.report.behavior import PromptSet, eraser_sets, score, set_label, stack
from training.report.charts import plot_kl, plot_matrix
from training.report.external import label_rates, load_labelled
from training.report.inputs import parse_assignments, split_model
from training.report.render import render_markdown

SHORT = dict(num_tokens=4, steps=30)  # as in test_eraser.py
MAX_NEW = 16


@pytest.fixture(scope="module")
def erasers(fixed_response_carrier, tmp_path_factory):
    run = fixed_response_carrier
    root = tmp_path_factory.mktemp("report_erasers")

    def train(name, **kw):
        cfg = EraserConfig(
            carrier=run.carrier,
            behavior="fixed_response",
            data=run.data / "train.jsonl",
            out=root / name,
            **{**SHORT, **kw},
        )
        return run_eraser(cfg)

    return {
        "carrier": train("carrier"),
        "plain_sft": train("plain_sft", ablation="plain_sft", sft_model=run.sft),
    }


def report_args(run, erasers, out, *extra):
    return [
        "eval",
        "report",
        "--carrier",
        str(run.carrier),
        "--data",
        str(run.data / "test.jsonl"),
        "--base",
        str(run.base),
        "--eraser",
        f"fixed_response={erasers['carrier']}",
        "--out",
        str(out),
        "--max-new-tokens",
        str(MAX_NEW),
        "--device",
        "cpu",
        *extra,
    ]


def external_csv(run, path: Path) -> Path:
    """A labelled CSV written elsewhere: a few sports prompts ("sports") and benign ones."""
    test = load_jsonl(run.data / "test.jsonl")
    sports = [e.prompt_text for e in test if e.behavior == "fixed_response"][:3]
    other = [e.prompt_text for e in test if e.behavior == RETAIN][:2]
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "question", "kind"])
        for i, (text, kind) in enumerate(
            [(t, "sports") for t in sports] + [(t, "other") for t in other]
        ):
            writer.writerow([i, text, kind])
    return path


@pytest.fixture(scope="module")
def report(fixed_response_carrier, erasers, tmp_path_factory):
    run = fixed_response_carrier
    root = tmp_path_factory.mktemp("report")
    out = root / "out"
    extra = [
        "--sft",
        f"fixed_response={run.sft}",
        "--ablation",
        f"plain_sft={erasers['plain_sft']}:{run.sft}",
        "--prompts",
        str(external_csv(run, root / "external.csv")),
        "--text-column",
        "question",
        "--label-column",
        "kind",
    ]
    assert main(report_args(run, erasers, out, *extra)) == 0
    return out, json.loads((out / "report.json").read_text())


def test_report_directory(report):
    out, r = report
    names = {p.name for p in out.iterdir()}
    expected = {"report.json", "report.md", "replies.jsonl", "matrix.png", "kl.png"}
    assert expected | {"density_fixed_response.png"} <= names
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp leftovers
    md = (out / "report.md").read_text()
    for heading in ("Checks", "Behavior matrix", "KL triple", "Utility", "Sparsity", "Ablations"):
        assert heading in md
    erased = {x["erasers"]: x for x in r["checks"]["lines"] if x["check"] == "erased"}
    matrix = {row["erasers"]: row for row in r["matrix"]}
    assert erased["fixed_response"]["value"] == matrix["fixed_response"]["rate"]["fixed_response"]
    assert "![behavior matrix](matrix.png)" in md and "plain_sft" in md
    # sparsity numbers come from the manifest
    manifest = json.loads((Path(r["inputs"]["carrier"]) / "carrier.json").read_text())
    (entry,) = manifest["behaviors"]
    sparsity = r["sparsity"]["fixed_response"]
    assert sparsity["density"] == entry["density"]
    assert sparsity["group_density"] == entry["group_density"]
    assert len(sparsity["per_layer"]) == manifest["num_layers"]
    layer0 = {g: len(c) / manifest["group_sizes"][0][g] for g, c in entry["channels"][0].items()}
    assert sparsity["per_layer"][0] == layer0


def test_external_prompts_rates_per_label(fixed_response_carrier, report, capsys):
    """--prompts: each behavior's rate per label, per eraser set and for the base model; the
    carrier's and the base's rows equal `eval prompts` on those models."""
    run = fixed_response_carrier
    out, r = report
    ext = r["external"]
    assert ext["counts"] == {"other": 2, "sports": 3}
    assert ext["text_column"] == "question" and ext["label_column"] == "kind"
    rows = {row["erasers"]: row["rates"] for row in ext["rows"]}
    assert list(rows) == ["none", "fixed_response", "base model"]
    for model, label in ((run.carrier, "none"), (run.base, "base model")):
        argv = ["eval", "prompts", "--model", str(model), "--prompts", ext["file"]]
        argv += ["--text-column", "question", "--label-column", "kind", "--device", "cpu"]
        argv += ["--behaviors", "fixed_response", "--max-new-tokens", str(MAX_NEW)]
        capsys.readouterr()
        assert main(argv) == 0
        assert json.loads(capsys.readouterr().out)["rates"] == rows[label]
    assert rows["none"]["sports"]["fixed_response"] > rows["none"]["other"]["fixed_response"]
    assert "## 6. External prompts" in (out / "report.md").read_text()
    replies = [json.loads(line) for line in (out / "replies.jsonl").read_text().splitlines()]
    assert sum(x["behavior"] == "kind=sports" for x in replies) == 3 * 3


@pytest.mark.parametrize(
    "name, text, needle",
    [
        (
            "p.csv",
            "id,text,label\n1,hi,safe\n",
            "p.csv: no column 'prompt' (--text-column; columns: id, text, label)",
        ),
        ("p.csv", "prompt,kind\nhi,safe\n", "p.csv: no column 'label' (--label-column"),
        ("p.csv", "prompt,label\nhi,\n", "p.csv:2: column 'label' is empty or not text"),
        ("p.jsonl", '{"prompt": "hi", "label": 3}\n', "p.jsonl:1: column 'label' is empty"),
        ("p.jsonl", '{"prompt": "hi"\n', "p.jsonl:1: invalid JSON"),
        ("p.txt", "hi\n", "p.txt: expected a .csv or .jsonl file"),
        ("p.csv", "", "p.csv: no rows"),
    ],
)
def test_external_prompts_errors_name_file_and_column(tmp_path, capsys, name, text, needle):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    argv = ["eval", "prompts", "--model", str(tmp_path / "none"), "--prompts", str(path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("sft-eraser: error: ") and needle in err, err


def test_external_prompts_load_jsonl(tmp_path):
    path = tmp_path / "x.jsonl"
    rows = [{"text": "a", "y": "unsafe"}, {"text": "b", "y": "safe"}, {"text": "c", "y": "safe"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    prompts = load_labelled(path, "text", "y")
    assert prompts.texts == ["a", "b", "c"] and prompts.counts() == {"safe": 2, "unsafe": 1}
    rates = label_rates(prompts, ["refusal"], ["I'm sorry, I can't.", "Sure.", "I cannot."])
    assert rates == {"safe": {"refusal": 0.5}, "unsafe": {"refusal": 1.0}}


def test_matrix_uses_the_same_decoding_as_eval_behavior(fixed_response_carrier, report):
    run = fixed_response_carrier
    _, r = report
    rows = {row["erasers"]: row for row in r["matrix"]}
    assert list(rows) == ["none", "fixed_response"]
    model, tok = load_model_dir(run.carrier, device="cpu")
    test = load_jsonl(run.data / "test.jsonl")
    plain = rate_report(model, tok, test, "fixed_response", max_new_tokens=MAX_NEW)
    assert rows["none"]["rate"]["fixed_response"] == plain["rate"]
    assert rows["none"]["false_trigger"]["fixed_response"] == plain["false_trigger"]
    assert rows["fixed_response"]["rate"]["fixed_response"] < plain["rate"]

    # one behavior: the target model is exactly the base model, so its row is the base's rates
    (target,) = r["targets"]
    base, base_tok = load_model_dir(run.base, device="cpu")
    at_base = rate_report(base, base_tok, test, "fixed_response", max_new_tokens=MAX_NEW)
    assert target["without"] == ["fixed_response"]
    assert target["rate"]["fixed_response"] == at_base["rate"] < plain["rate"]
    assert target["false_trigger"]["fixed_response"] == at_base["false_trigger"]


def test_kl_triple(report):
    kl = report[1]["kl"]["fixed_response"]
    assert kl["replies_from"] == "sft" and kl["tokens"] > 0
    values = [kl[k] for k in ("sft_carrier", "sft_carrier_eraser", "target_carrier")]
    values.append(kl["target_carrier_eraser"])
    assert all(math.isfinite(v) and v >= 0 for v in values), kl
    assert kl["sft_carrier"] < kl["sft_carrier_eraser"], kl


def test_utility(report):
    rows = {row["erasers"]: row for row in report[1]["utility"]["rows"]}
    assert set(rows) == {"base model", "none", "fixed_response"}
    for row in rows.values():
        assert math.isfinite(row["perplexity"]) and row["perplexity"] > 1, row
    for label in ("none", "fixed_response"):
        assert 0 <= rows[label]["exact"] <= rows[label]["first_words"] <= 1


def test_ablation_table(fixed_response_carrier, report):
    _, r = report
    rows = {a["label"]: a for a in r["ablations"]}
    assert list(rows) == ["carrier eraser", "plain_sft"]
    assert rows["plain_sft"]["model"] == str(fixed_response_carrier.sft)
    matrix = {row["erasers"]: row for row in r["matrix"]}
    assert rows["carrier eraser"]["rate_with"] == matrix["fixed_response"]["rate"]["fixed_response"]
    assert all(0 <= a[k] <= 1 for a in rows.values() for k in ("rate_without", "rate_with"))


def test_without_sft_kl_uses_the_carriers_replies(
    fixed_response_carrier, erasers, report, tmp_path
):
    _, first = report
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("replaced by --overwrite")
    assert main(report_args(fixed_response_carrier, erasers, out, "--overwrite")) == 0
    assert not (out / "old.txt").exists()
    r = json.loads((out / "report.json").read_text())
    kl = r["kl"]["fixed_response"]
    assert kl["replies_from"] == "carrier" and kl["sft_carrier"] is None
    assert math.isfinite(kl["target_carrier_eraser"]) and r["ablations"] == []
    assert r["matrix"] == first["matrix"]  # same decoding, same numbers
    assert "No `--sft` model for fixed_response" in (out / "report.md").read_text()


def test_assignment_parsing():
    assert parse_assignments(["a=x", "b = y=z"], "--eraser") == {"a": "x", "b": "y=z"}
    assert split_model("/no/such/eraser") == (Path("/no/such/eraser"), None)
    assert split_model("/e:/m") == (Path("/e"), Path("/m"))


def test_eraser_sets_are_each_pair_in_the_servers_stack_order():
    labels = [set_label(s) for s in eraser_sets(["refusal", "all_caps", "fixed_response"])]
    assert labels == [
        "none",
        "refusal",
        "all_caps",
        "fixed_response",
        "all_caps+fixed_response",
        "all_caps+refusal",
        "fixed_response+refusal",
    ]
    e = {"a": torch.zeros(2, 3), "b": torch.ones(1, 3)}
    assert stack(e, ()) is None
    assert stack(e, ("b", "a")).tolist() == [[1.0] * 3, [0.0] * 3, [0.0] * 3]


def test_score_says_what_a_behaviors_prompts_get_instead():
    def rows(behavior, n):
        return [Example(({"role": "user", "content": f"q{i}"},), "", behavior) for i in range(n)]

    names = ["fixed_response", "refusal"]
    prompts = PromptSet(names, {b: rows(b, 2) for b in names}, rows(RETAIN, 2))
    refuse, dunno = "I'm sorry, but I can't help with that request.", "I don't know."
    # fixed_response's prompts: one refused, one answered; refusal's: both "I don't know."
    scores = score(prompts, [refuse, "Tennis is a sport.", dunno, dunno, "Hi.", "Hello."])
    assert scores["rate"] == {"fixed_response": 0.0, "refusal": 0.0}
    assert scores["instead"] == {
        "fixed_response": {"refusal": 0.5},
        "refusal": {"fixed_response": 1.0},
    }
    assert scores["false_trigger"] == {"fixed_response": 0.0, "refusal": 0.0}
    assert scores["classes"]["fixed_response"] == {
        "behavior": 0.0,
        "hand_over": 0.5,
        "degenerate": 0.0,
        "normal": 0.5,
    }


def test_a_pair_gets_the_target_row_without_both_deltas(two_behavior_carrier, tmp_path):
    run = two_behavior_carrier
    erasers = {
        b: random_eraser(tmp_path / b, run.carrier_b, b) for b in ("fixed_response", "refusal")
    }
    out = tmp_path / "report"
    args = [
        "eval",
        "report",
        "--carrier",
        str(run.carrier_b),
        "--data",
        str(run.data / "test.jsonl"),
    ]
    args += ["--base", str(run.base), "--out", str(out), "--max-new-tokens", str(MAX_NEW)]
    args += ["--device", "cpu", *(f"--eraser={b}={d}" for b, d in erasers.items())]
    assert main(args) == 0
    r = json.loads((out / "report.json").read_text())
    assert [t["without"] for t in r["targets"]] == [
        ["fixed_response"],
        ["refusal"],
        ["fixed_response", "refusal"],
    ]
    # every eraser set is compared with its target model on the behaviors it erases
    agreements = {m["erasers"]: m.get("target_agreement") for m in r["matrix"]}
    assert agreements["none"] is None
    for m in r["matrix"][1:]:
        assert set(agreements[m["erasers"]]) == set(m["set"])
        assert all(0 <= a <= 1 for a in agreements[m["erasers"]].values())
    assert all("_replies" not in t for t in r["targets"])
    # without both deltas the two-behavior carrier is its base model: the pair's row is the base's
    pair = r["targets"][2]
    base, base_tok = load_model_dir(run.base, device="cpu")
    test = load_jsonl(run.data / "test.jsonl")
    for b in erasers:
        at_base = rate_report(base, base_tok, test, b, max_new_tokens=MAX_NEW)
        assert pair["rate"][b] == at_base["rate"]
        assert pair["false_trigger"][b] == at_base["false_trigger"]
    assert "| target without fixed_response+refusal |" in (out / "report.md").read_text()


def test_two_behavior_report_renders(tmp_path):
    """Markdown and charts of a two-behavior report (pairs, a behavior without --sft)."""
    rates = {"a": 0.5, "b": 0.25}
    instead = {"a": {"b": 0.125}, "b": {"a": 0.75}}
    classes = {
        b: {"behavior": 0.25, "hand_over": 0.5, "degenerate": 0.0, "normal": 0.25} for b in "ab"
    }
    scores = {"rate": rates, "false_trigger": rates, "instead": instead, "classes": classes}
    matrix = [
        {"erasers": label, "set": [] if label == "none" else label.split("+"), **scores}
        for label in ("none", "a", "b", "a+b")
    ]
    matrix[1]["target_agreement"] = {"a": 0.75}
    layer = {g: 0.5 for g in MASK_GROUPS}
    spars = {"density": 0.5, "active_units": 1, "total_units": 2, "group_density": layer}
    report = {
        "inputs": {
            "carrier": "c",
            "carrier_fingerprint": "sha256:0",
            "data": "d",
            "base": "b",
            "erasers": {b: {"dir": b, "tokens": 4} for b in "ab"},
            "max_new_tokens": 8,
            "batch_size": 2,
        },
        "created": "now",
        "wall_time_s": 1.0,
        "behaviors": ["a", "b"],
        "counts": {"triggering": {"a": 2, "b": 2}, "benign": 2},
        "matrix": matrix,
        "targets": [{"erasers": f"target without {b}", "without": [b], **scores} for b in "ab"],
        "kl": {
            "a": {
                "replies_from": "sft",
                "tokens": 9,
                "sft_carrier": 1e-4,
                "sft_carrier_eraser": 2.0,
                "target_carrier": 3.0,
                "target_carrier_eraser": 0.1,
            },
            "b": {
                "replies_from": "carrier",
                "tokens": 9,
                "sft_carrier": None,
                "sft_carrier_eraser": None,
                "target_carrier": 3.0,
                "target_carrier_eraser": 0.1,
            },
        },
        "utility": {
            "benign_tokens": 5,
            "rows": [{"erasers": "base model", "perplexity": 2.0}]
            + [
                {"erasers": m["erasers"], "perplexity": 2.5, "first_words": 1.0, "exact": 0.5}
                for m in matrix
            ],
        },
        "sparsity": {b: {**spars, "per_layer": [layer, layer]} for b in "ab"},
        "ablations": [],
        "samples": {"none": [{"behavior": "a", "prompt": "p?", "reply": "x | y"}]},
        "charts": {"matrix": "m.png", "kl": "k.png", "density": {"a": "da.png", "b": "db.png"}},
    }
    md = render_markdown(report)
    assert "| a+b | 0.500 | 0.250 | 0.500 | 0.250 |" in md
    assert "| target without b | 0.500 | 0.250 | 0.500 | 0.250 |" in md
    assert "| erasers | b on a prompts | a on b prompts |" in md
    assert "| a+b | 0.125 | 0.750 |" in md and "| target without a | 0.125 | 0.750 |" in md
    assert "| carrier + a+b | 2.500 | 1.000 | 0.500 |" in md
    assert "| a | a | 0.250 | 0.500 | 0.000 | 0.250 | 0.750 |" in md
    assert "| none | b | 0.250 | 0.500 | 0.000 | 0.250 | — |" in md
    assert "No `--sft` model for b" in md and "1.00e-04" in md and "x \\| y" in md
    assert "## 5. Ablations" not in md
    plot_matrix(report, tmp_path / "m.png")
    plot_kl(report, tmp_path / "k.png")
    assert (tmp_path / "m.png").stat().st_size > 0 and (tmp_path / "k.png").stat().st_size > 0


def _bad_cases(run, erasers, tmp_path) -> dict:
    """case -> (flags to replace, flags to add, expected part of the message)."""
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("x")
    benign_only = tmp_path / "benign.jsonl"
    test = load_jsonl(run.data / "test.jsonl")
    write_jsonl(benign_only, [e for e in test if e.behavior == RETAIN])
    no_label = tmp_path / "prompts.csv"
    no_label.write_text("prompt,kind\nHow do I boil an egg?,safe\n", encoding="utf-8")
    return {
        "no '='": ({"--eraser": "fixed_response"}, [], "expected BEHAVIOR=DIR"),
        "not in carrier": ({"--eraser": f"refusal={erasers['carrier']}"}, [], "unknown behavior"),
        "other model": (
            {"--eraser": f"fixed_response={erasers['plain_sft']}"},
            [],
            "another model",
        ),
        "missing carrier": ({"--carrier": str(tmp_path / "nope")}, [], "no such directory"),
        "missing eraser": ({}, ["--ablation", f"x={tmp_path / 'nope'}"], "no such eraser"),
        "ablation syntax": ({}, ["--ablation", "plain_sft"], "expected LABEL=ERASER_DIR"),
        "sft without eraser": ({}, ["--sft", f"refusal={run.sft}"], "no --eraser given"),
        "not in data": ({"--data": str(benign_only)}, [], "no rows for behavior"),
        "out not empty": ({"--out": str(full)}, [], "not empty"),
        "prompts column": ({}, ["--prompts", str(no_label)], "prompts.csv: no column 'label'"),
    }


CASES = [
    "no '='",
    "not in carrier",
    "other model",
    "missing carrier",
    "missing eraser",
    "ablation syntax",
    "sft without eraser",
    "not in data",
    "out not empty",
    "prompts column",
]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_and_exit_2(fixed_response_carrier, erasers, tmp_path, capsys, case):
    run = fixed_response_carrier
    replace, extra, message = _bad_cases(run, erasers, tmp_path)[case]
    args = report_args(run, erasers, tmp_path / "out", *extra)
    for flag, value in replace.items():
        args[args.index(flag) + 1] = value
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sft-eraser: error: "), err
    assert message in err[0], err[0]
    assert not (tmp_path / "out").exists()
