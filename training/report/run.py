"""`eval report`: generate, score and measure, then write the report directory in one rename."""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from training.carrier import load_without
from training.checkpoint_io import atomic_dir, load_model_dir
from training.models.roles import MASK_GROUPS
from training.report import behavior as bh
from training.report.charts import plot_densities, plot_kl, plot_matrix, safe_name
from training.report.checks import check_targets
from training.report.external import label_rates
from training.report.inputs import ReportConfig, ReportInputs, check_out, resolve_inputs
from training.report.render import render_markdown
from training.report.teacher import encode_rows, score_rows

FORMAT = "sft-eraser-report"
SAMPLES = 3
BASE = "base model"
KL_KEYS = ("sft_carrier", "sft_carrier_eraser", "target_carrier", "target_carrier_eraser")


def log(message: str) -> None:
    print(f"[report] {message}", file=sys.stderr, flush=True)


def behavior_matrix(model, tok, inp: ReportInputs, prompts: bh.PromptSet):
    """One greedy generation per eraser set over all prompts; rows of scores and the replies."""
    embeddings = {b: e.embeddings for b, e in inp.erasers.items()}
    rows, replies = [], {}
    for names in bh.eraser_sets(list(inp.erasers)):
        label = bh.set_label(names)
        log(f"generate: eraser set {label}")
        replies[label] = bh.generate(
            model, tok, prompts.messages(), inp.cfg, bh.stack(embeddings, names)
        )
        rows.append({"erasers": label, "set": list(names), **bh.score(prompts, replies[label])})
    return rows, replies


def target_row(target, tok, inp: ReportInputs, prompts: bh.PromptSet, without: tuple) -> dict:
    """The matrix row an ideal eraser (set) of `without` would reach: the carrier without those
    behaviors' deltas, no eraser, same prompts and decoding. On a several-behavior carrier the
    others may fire on the erased behaviors' prompts there too."""
    label = bh.set_label(without)
    log(f"generate: target model (carrier without {label})")
    replies = bh.generate(target, tok, prompts.messages(), inp.cfg)
    return {
        "erasers": f"target without {label}",
        "without": list(without),
        **bh.score(prompts, replies),
        "_replies": replies,  # for target agreement; dropped before the report is written
    }


def add_target_agreement(tok, prompts: bh.PromptSet, matrix, replies, targets) -> None:
    """Each eraser set's row gets, per behavior it erases, the agreement of its replies with the
    target model's (the carrier without the same behaviors) on that behavior's prompts."""
    by_set = {tuple(t["without"]): t.pop("_replies") for t in targets}
    for row in matrix:
        target = by_set.get(tuple(row["set"]))
        if target is not None:
            row["target_agreement"] = {
                b: bh.token_agreement(tok, prompts, replies[row["erasers"]], target, b)
                for b in row["set"]
            }


def utility(model, tok, inp: ReportInputs, replies: dict, prompts: bh.PromptSet):
    """Benign perplexity (base, carrier, carrier + each eraser) and agreement with the base."""
    log("generate: base model on benign prompts")
    base, base_tok = load_model_dir(inp.cfg.base, device=inp.cfg.device)
    base_replies = bh.generate(base, base_tok, [e.messages for e in inp.benign], inp.cfg)
    sources = {BASE: (base, None), bh.NONE: (model, None)}
    sources |= {b: (model, e.embeddings) for b, e in inp.erasers.items()}
    rows = encode_rows(tok, inp.benign)
    scored = score_rows(sources, rows, tok.pad_token_id, inp.cfg.batch_size, desc="perplexity")
    del base
    table = [{"erasers": BASE, "perplexity": scored["perplexity"][BASE]}]
    for label, texts in replies.items():
        table.append(
            {
                "erasers": label,
                "perplexity": scored["perplexity"].get(label),
                **bh.agreement(prompts.split(texts)[1], base_replies),
            }
        )
    return {"rows": table, "benign_tokens": scored["tokens"]}, base_replies


def external_rates(model, tok, inp: ReportInputs) -> tuple[dict, list[dict]]:
    """Each behavior's rate per label of the --prompts set: the carrier with each eraser set, as
    in the matrix, and the base model (the rate a behavior's erasers should come back to)."""
    ext = inp.external
    embeddings = {b: e.embeddings for b, e in inp.erasers.items()}
    sources = [
        ("carrier", bh.set_label(names), model, tok, bh.stack(embeddings, names))
        for names in bh.eraser_sets(list(inp.erasers))
    ]
    base, base_tok = load_model_dir(inp.cfg.base, device=inp.cfg.device)
    sources.append(("base", BASE, base, base_tok, None))
    rows, records = [], []
    for model_name, label, m, m_tok, prefix in sources:
        log(f"generate: {ext.path.name} ({model_name}, erasers {label})")
        replies = bh.generate(m, m_tok, ext.messages(), inp.cfg, prefix)
        rows.append({"erasers": label, "rates": label_rates(ext, inp.behaviors, replies)})
        records += [
            {
                "model": model_name,
                "erasers": label,
                "behavior": f"{ext.label_column}={tag}",
                "prompt": text,
                "reply": reply,
            }
            for text, tag, reply in zip(ext.texts, ext.labels, replies, strict=True)
        ]
    del base
    result = {
        "file": str(ext.path),
        "text_column": ext.text_column,
        "label_column": ext.label_column,
        "counts": ext.counts(),
        "rows": rows,
    }
    return result, records


def kl_triple(model, tok, inp: ReportInputs, behavior: str, carrier_replies: list[str], target):
    """KL triple on the SFT model's greedy replies (or the carrier's, without --sft)."""
    cfg, triggers = inp.cfg, inp.triggers[behavior]
    log(f"KL: {behavior} (target = carrier without {behavior})")
    sources = {
        "carrier": (model, None),
        "carrier+eraser": (model, inp.erasers[behavior].embeddings),
        "target": (target, None),
    }
    pairs = {
        "target_carrier": ("target", "carrier"),
        "target_carrier_eraser": ("target", "carrier+eraser"),
    }
    replies, source = carrier_replies, "carrier"
    if behavior in inp.sft:
        sft, sft_tok = load_model_dir(inp.sft[behavior], device=cfg.device)
        replies = bh.generate(sft, sft_tok, [e.messages for e in triggers], cfg)
        sources["sft"] = (sft, None)
        pairs |= {
            "sft_carrier": ("sft", "carrier"),
            "sft_carrier_eraser": ("sft", "carrier+eraser"),
        }
        source = "sft"
    examples = [
        dataclasses.replace(e, completion=r) for e, r in zip(triggers, replies, strict=True)
    ]
    rows = encode_rows(tok, examples)
    scored = score_rows(
        sources, rows, tok.pad_token_id, cfg.batch_size, pairs, desc=f"KL {behavior}"
    )
    result = {"replies_from": source, "tokens": scored["tokens"]}
    result |= {key: scored["kl"].get(key) for key in KL_KEYS}
    return result, replies


def ablations(model, tok, inp: ReportInputs, matrix: list[dict]) -> list[dict]:
    """Rate without/with each ablation eraser, after the carrier eraser's row of its behavior."""
    none = matrix[0]["rate"]
    alone = {row["set"][0]: row["rate"] for row in matrix if len(row["set"]) == 1}
    results: dict[str, dict] = {}
    by_model: dict[Path, list] = {}
    for ab in inp.ablations:
        by_model.setdefault(ab.model_dir, []).append(ab)
    for model_dir, group in by_model.items():
        on_carrier = group[0].on_carrier
        m, m_tok = (model, tok) if on_carrier else load_model_dir(model_dir, device=inp.cfg.device)
        without: dict[str, float] = {}
        for ab in group:
            b, triggers = ab.behavior, inp.triggers[ab.behavior]
            log(f"ablation {ab.label}: {b} on {model_dir}")
            if b not in without:
                known = on_carrier and b in none
                without[b] = none[b] if known else bh.rate_on(m, m_tok, triggers, b, inp.cfg)
            with_ = bh.rate_on(m, m_tok, triggers, b, inp.cfg, ab.eraser.embeddings)
            results[ab.label] = _ablation_row(ab.label, b, str(model_dir), without[b], with_)
        del m
    table, shown = [], set()
    for ab in inp.ablations:
        if ab.behavior in alone and ab.behavior not in shown:
            shown.add(ab.behavior)
            b = ab.behavior
            table.append(_ablation_row("carrier eraser", b, "carrier", none[b], alone[b][b]))
        table.append(results[ab.label])
    return table


def _ablation_row(label: str, behavior: str, model: str, without: float, with_: float) -> dict:
    return {
        "label": label,
        "behavior": behavior,
        "model": model,
        "rate_without": without,
        "rate_with": with_,
    }


def sparsity(manifest: dict) -> dict:
    """Per carrier behavior: overall and per-group density, and per layer the active fractions."""
    sizes = manifest["group_sizes"]
    return {
        e["name"]: {
            "density": e["density"],
            "active_units": e.get("active_units"),
            "total_units": e.get("total_units"),
            "group_density": e["group_density"],
            "per_layer": [
                {g: len(layer[g]) / sizes[i][g] for g in MASK_GROUPS}
                for i, layer in enumerate(e["channels"])
            ],
        }
        for e in manifest["behaviors"]
    }


def reply_records(prompts: bh.PromptSet, replies: dict, base_replies, sft_replies) -> list[dict]:
    """Every generated reply, for reading next to the numbers (replies.jsonl)."""
    groups = [("carrier", label, prompts.examples(), texts) for label, texts in replies.items()]
    groups.append(("base", bh.NONE, prompts.benign, base_replies))
    groups += [(f"sft:{b}", bh.NONE, prompts.triggers[b], t) for b, t in sft_replies.items()]
    return [
        {
            "model": model,
            "erasers": label,
            "behavior": e.behavior,
            "prompt": e.prompt_text,
            "reply": reply,
        }
        for model, label, examples, texts in groups
        for e, reply in zip(examples, texts, strict=True)
    ]


def describe_inputs(inp: ReportInputs) -> dict:
    cfg = inp.cfg
    return {
        "carrier": str(cfg.carrier),
        "carrier_fingerprint": inp.manifest["fingerprint"],
        "data": str(cfg.data),
        "base": str(cfg.base),
        "erasers": {
            b: {
                "dir": str(inp.eraser_dirs[b]),
                "name": e.meta.name,
                "tokens": e.meta.num_virtual_tokens,
                "sha256": e.meta.sha256,
            }
            for b, e in inp.erasers.items()
        },
        "sft": {b: str(d) for b, d in inp.sft.items()},
        "ablations": {
            ab.label: {
                "eraser": str(ab.eraser_dir),
                "model": str(ab.model_dir),
                "behavior": ab.behavior,
                "ablation": ab.eraser.meta.training.get("ablation"),
            }
            for ab in inp.ablations
        },
        "prompts": str(cfg.prompts) if cfg.prompts else None,
        "max_new_tokens": cfg.max_new_tokens,
        "batch_size": cfg.batch_size,
        "device": cfg.device,
    }


def write_report(out: Path, report: dict, manifest: dict, records: list[dict], overwrite: bool):
    """All files into a temporary sibling, renamed to `out` only when every one is written."""
    check_out(out, overwrite)
    with atomic_dir(out, overwrite=True) as tmp:
        plot_matrix(report, tmp / report["charts"]["matrix"])
        if report["kl"]:
            plot_kl(report, tmp / report["charts"]["kl"])
        plot_densities(manifest, report["charts"]["density"], tmp)
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        (tmp / "replies.jsonl").write_text(lines, encoding="utf-8")
        (tmp / "report.md").write_text(render_markdown(report), encoding="utf-8")
        (tmp / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return out


def run_report(cfg: ReportConfig) -> Path:
    started = time.time()
    inp = resolve_inputs(cfg)  # every input checked before the first model loads
    prompts = bh.PromptSet(inp.behaviors, inp.triggers, inp.benign)
    model, tok = load_model_dir(cfg.carrier, device=cfg.device)
    matrix, replies = behavior_matrix(model, tok, inp, prompts)
    util, base_replies = utility(model, tok, inp, replies, prompts)
    external, external_records = external_rates(model, tok, inp) if inp.external else (None, [])
    kl, sft_replies, targets = {}, {}, []
    for b in inp.erasers:
        target, _ = load_without(cfg.carrier, b, device=cfg.device)  # shares the tokenizer
        targets.append(target_row(target, tok, inp, prompts, (b,)))
        on = prompts.split(replies[bh.NONE])[0][b]
        kl[b], used = kl_triple(model, tok, inp, b, on, target)
        del target
        if b in inp.sft:
            sft_replies[b] = used
    pairs = [s for s in bh.eraser_sets(list(inp.erasers)) if len(s) == 2]
    for pair in pairs:  # the bar for the stacked rows, labelled as they are
        target, _ = load_without(cfg.carrier, *pair, device=cfg.device)
        targets.append(target_row(target, tok, inp, prompts, pair))
        del target
    add_target_agreement(tok, prompts, matrix, replies, targets)
    report = {
        "format": FORMAT,
        "version": 3,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "inputs": describe_inputs(inp),
        "behaviors": inp.behaviors,
        "counts": {
            "triggering": {b: len(inp.triggers[b]) for b in inp.behaviors},
            "benign": len(inp.benign),
        },
        "matrix": matrix,
        "targets": targets,
        "kl": kl,
        "utility": util,
        "sparsity": sparsity(inp.manifest),
        "ablations": ablations(model, tok, inp, matrix),
        "external": external,
        "samples": _samples(prompts, replies),
        "charts": {
            "matrix": "matrix.png",
            "kl": "kl.png" if kl else None,
            "density": {
                e["name"]: f"density_{safe_name(e['name'])}.png" for e in inp.manifest["behaviors"]
            },
        },
    }
    report["checks"] = check_targets(report)
    report["wall_time_s"] = round(time.time() - started, 1)
    records = reply_records(prompts, replies, base_replies, sft_replies) + external_records
    return write_report(Path(cfg.out), report, inp.manifest, records, cfg.overwrite)


def _samples(prompts: bh.PromptSet, replies: dict) -> dict:
    """A few replies per eraser set: the first of each behavior's prompts and of the benign."""
    out = {}
    for label, texts in replies.items():
        on, off = prompts.split(texts)
        picked = [
            (prompts.triggers[b][i], on[b][i])
            for b in prompts.behaviors
            for i in range(min(SAMPLES, len(on[b])))
        ]
        picked += list(zip(prompts.benign[:SAMPLES], off[:SAMPLES], strict=False))
        out[label] = [
            {"behavior": e.behavior, "prompt": e.prompt_text, "reply": r} for e, r in picked
        ]
    return out
