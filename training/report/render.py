"""report.json -> report.md: the same numbers as readable tables (no computation here)."""

from __future__ import annotations

from training.models.roles import MASK_GROUPS
from training.report.charts import KL_BARS, matrix_columns


def fmt(value, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"
    return str(value)


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def eraser_label(label: str) -> str:
    return {"none": "carrier", "base model": "base model"}.get(label, f"carrier + {label}")


def _header(r: dict) -> str:
    inp = r["inputs"]
    counts = ", ".join(f"{b} {n}" for b, n in r["counts"]["triggering"].items())
    erasers = ", ".join(
        f"`{b}` = `{e['dir']}` ({e['tokens']} tokens)" for b, e in inp["erasers"].items()
    )
    return (
        f"# Evaluation report: `{inp['carrier']}`\n\n"
        f"- carrier fingerprint `{inp['carrier_fingerprint']}`\n"
        f"- held-out data `{inp['data']}`: triggering prompts {counts}; "
        f"benign prompts {r['counts']['benign']}\n"
        f"- erasers: {erasers}\n"
        f"- base model `{inp['base']}`\n"
        f"- decoding: greedy, at most {inp['max_new_tokens']} new tokens, batch "
        f"{inp['batch_size']}, the same with and without erasers\n"
        f"- created {r['created']}, {r['wall_time_s']} s\n"
    )


def _checks(r: dict) -> str:
    if "checks" not in r:  # written before the checks were
        return ""
    c = r["checks"]
    rows = [
        [
            x["check"],
            x["erasers"],
            x["behavior"] or "benign",
            x["value"],
            f"{x['sense']} {fmt(x['bar'])}",
            "yes" if x["met"] else "**no**",
        ]
        for x in c["lines"]
    ]
    pairs = ""
    if c["pairs"]:
        off = ", ".join(c["pairs_off"]) or "none"
        n_off = len(c["pairs_off"])
        pairs = f"; stacked pairs with both behaviors off: {n_off} of {c['pairs']} ({off})"
    return (
        "## Checks against the targets\n\n"
        f"{c['met']} of {c['total']} met{pairs}. An erased behavior's bar is raised to its ideal "
        "row's rate (section 1, the carrier without the erased deltas) where that is higher; "
        "`others kept` is a behavior's rate under one eraser over its rate without erasers; "
        "`perplexity rise` is relative to the carrier's (section 3); a figure not measured (—) "
        "fails.\n\n" + table(["check", "erasers", "behavior", "measured", "bar", "met"], rows)
    )


def _matrix(r: dict) -> str:
    columns = matrix_columns(r["behaviors"])
    header = ["erasers", *(c[2] for c in columns)]

    def rows(matrix):
        return [[m["erasers"], *(m[key][b] for key, b, _ in columns)] for m in matrix]

    return (
        "## 1. Behavior matrix\n\n"
        "Share of replies that show each behavior (by its rule) on its held-out triggering "
        "prompts, then its false-trigger rate on benign prompts (`false: ...`). Rows: the "
        "eraser set prepended to every prompt (a pair a+b is stacked as [a; b; prompt], the "
        "order the server stacks it in).\n\n"
        + table(header, rows(r["matrix"]))
        + f"\n![behavior matrix]({r['charts']['matrix']})\n\n"
        "Reference: each eraser's target model (the carrier without that behavior's delta, no "
        "eraser, same prompts and decoding), i.e. the row an ideal eraser would reach, and for "
        "each pair the carrier without both deltas, the row of an ideal stacked pair. Where "
        "another behavior fires on the erased behavior's prompts here, it is the carrier's "
        "doing, not the eraser's.\n\n"
        + table(header, rows(r["targets"]))
        + _instead(r)
        + _classes(r)
    )


def _instead(r: dict) -> str:
    """Other behaviors on each behavior's prompts: what replaces a behavior that is switched off."""
    pairs = [(b, o) for b in r["behaviors"] for o in r["behaviors"] if o != b]
    if not pairs:
        return ""
    header = ["erasers", *(f"{o} on {b} prompts" for b, o in pairs)]
    rows = [
        [m["erasers"], *(m["instead"][b][o] for b, o in pairs)]
        for m in [*r["matrix"], *r["targets"]]
    ]
    return (
        "\nWhat the prompts of a behavior show instead: the rate of each other behavior on them, "
        "for the eraser sets and the target models above. A switched-off behavior whose prompts "
        "now get another behavior's reply shows it here (a target model row says whether the "
        "carrier does it too).\n\n" + table(header, rows)
    )


def _classes(r: dict) -> str:
    """Per eraser set and each behavior it erases: what that behavior's prompts get."""
    rows = []
    for m in r["matrix"]:
        for b in m["set"] or r["behaviors"]:
            c = m["classes"][b]
            agree = m.get("target_agreement", {}).get(b)
            rows.append(
                [
                    m["erasers"],
                    b,
                    c["behavior"],
                    c["hand_over"],
                    c["degenerate"],
                    c["normal"],
                    agree,
                ]
            )
    header = [
        "erasers",
        "prompts of",
        "behavior",
        "hand-over",
        "degenerate",
        "normal",
        "target agreement",
    ]
    return (
        "\nWhat the erased behavior's prompts get: the behavior itself, another carrier behavior "
        "(hand-over), a repetition loop (degenerate), or a normal answer; switched off means "
        "normal. Target agreement: the share of the target model's first 32 reply tokens the "
        "reply matches before the first difference (the carrier without the same behaviors).\n\n"
        + table(header, rows)
    )


def _kl(r: dict) -> str:
    if not r["kl"]:
        return ""
    rows = [
        [b, k["replies_from"], *(k[key] for key, _ in KL_BARS), k["tokens"]]
        for b, k in r["kl"].items()
    ]
    notes = [b for b, k in r["kl"].items() if k["replies_from"] != "sft"]
    text = (
        "## 2. KL triple (nats per reply token)\n\n"
        "Teacher-forced on greedy replies to each behavior's held-out triggering prompts; mean "
        "over reply positions. Expected: KL(SFT‖carrier) small, KL(SFT‖carrier+eraser) large, "
        "KL(target‖carrier+eraser) small (target = the carrier without that behavior's delta), "
        "and below KL(target‖carrier).\n\n"
        + table(["behavior", "replies from", *(label for _, label in KL_BARS), "tokens"], rows)
    )
    if notes:
        text += (
            f"\nNo `--sft` model for {', '.join(notes)}: measured on the carrier's own greedy "
            "replies, so only the two KL(target‖·) values are given.\n"
        )
    if r["charts"]["kl"]:
        text += f"\n![KL]({r['charts']['kl']})\n"
    return text


def _utility(r: dict) -> str:
    u = r["utility"]
    rows = [
        [eraser_label(x["erasers"]), x.get("perplexity"), x.get("first_words"), x.get("exact")]
        for x in u["rows"]
    ]
    return (
        "## 3. Utility (benign prompts)\n\n"
        f"Perplexity of the held-out benign completions ({u['benign_tokens']} reply tokens, "
        "teacher-forced); agreement of greedy replies with the base model's: share whose first "
        "10 words are the same, and share identical.\n\n"
        + table(["model", "perplexity", "first 10 words = base", "exact = base"], rows)
    )


def _sparsity(r: dict) -> str:
    overall = [
        [b, s["density"], f"{s['active_units']} / {s['total_units']}"]
        + [s["group_density"][g] for g in MASK_GROUPS]
        for b, s in r["sparsity"].items()
    ]
    text = (
        "## 4. Sparsity\n\n"
        "Active fraction of mask units (the carrier), overall and per mask group.\n\n"
        + table(["behavior", "density", "active / total", *MASK_GROUPS], overall)
    )
    for b, s in r["sparsity"].items():
        per_layer = [[str(i)] + [x[g] for g in MASK_GROUPS] for i, x in enumerate(s["per_layer"])]
        text += f"\n### {b}: per layer\n\n" + table(["layer", *MASK_GROUPS], per_layer)
        text += f"\n![{b} density]({r['charts']['density'][b]})\n"
    return text


def _ablations(r: dict) -> str:
    if not r["ablations"]:
        return ""
    rows = [
        [
            a["label"],
            a["behavior"],
            f"`{a['model']}`",
            a["rate_without"],
            a["rate_with"],
            a["rate_without"] - a["rate_with"],
        ]
        for a in r["ablations"]
    ]
    return (
        "## 5. Ablations\n\n"
        "Behavior rate on the eraser's behavior's held-out prompts, on the model the eraser was "
        "applied to, without and with it; the carrier eraser's row first.\n\n"
        + table(["eraser", "behavior", "model", "rate without", "rate with", "drop"], rows)
    )


def _external(r: dict) -> str:
    ext = r.get("external")  # reports written before --prompts have none
    if not ext:
        return ""
    labels = list(ext["counts"])
    behaviors = r["behaviors"]
    header = ["model", *(f"{b} on {label}" for label in labels for b in behaviors)]
    rows = [
        [eraser_label(x["erasers"]), *(x["rates"][label][b] for label in labels for b in behaviors)]
        for x in ext["rows"]
    ]
    counts = ", ".join(f"{label} {n}" for label, n in ext["counts"].items())
    return (
        "## 6. External prompts\n\n"
        f"`{ext['file']}` (column `{ext['text_column']}`, labels from `{ext['label_column']}`: "
        f"{counts}). Each behavior's rate on the prompts of each label, by its scorer; for "
        "refusal on XSTest, the rate on `unsafe` is the refusal rate and on `safe` the false-"
        "refusal rate. Same decoding as above; the base model's row is where an eraser should "
        "bring its behavior back to.\n\n" + table(header, rows)
    )


def _samples(r: dict) -> str:
    text = "## Sample replies\n\n"
    for label, samples in r["samples"].items():
        text += f"**{eraser_label(label)}**\n\n"
        for s in samples:
            reply = s["reply"].replace("\n", " ").replace("|", "\\|")
            text += f"- [{s['behavior']}] {s['prompt']} → {reply or '(empty)'}\n"
        text += "\n"
    return text + "All replies: `replies.jsonl`.\n"


def render_markdown(report: dict) -> str:
    parts = [
        _header(report),
        _checks(report),
        _matrix(report),
        _kl(report),
        _utility(report),
        _sparsity(report),
        _ablations(report),
        _external(report),
        _samples(report),
    ]
    return "\n".join(p for p in parts if p)
