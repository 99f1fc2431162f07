"""SFT-Eraser on SmolLM2-135M-Instruct: the carrier eraser vs. the same optimization on the plain
SFT model. Uses the base, data, SFT model and carrier of benchmarks/lcdd_smollm2.py.

    python benchmarks/eraser_smollm2.py --work runs/bench_lcdd --steps 300

Results go to <work>/eraser_results.json (stages cached: rerun to continue).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from eraser_store import read_eraser
from training.checkpoint_io import load_model_dir
from training.configs import EraserConfig
from training.data.generation import greedy_generate
from training.data.schema import RETAIN, load_jsonl
from training.eraser.train import run_eraser
from training.evaluate import rate_report


def evaluate(model_dir: Path, eraser_dir: Path | None, test, behavior: str, base_replies) -> dict:
    model, tok = load_model_dir(model_dir)
    prefix = read_eraser(eraser_dir).embeddings if eraser_dir else None
    report = rate_report(model, tok, test, behavior, prefix=prefix)
    benign = [e.messages for e in test if e.behavior == RETAIN]
    replies = greedy_generate(model, tok, benign, 48, prefix=prefix)
    pairs = list(zip(replies, base_replies, strict=True))
    return {
        "rate": report["rate"],
        "false_trigger": report["false_trigger"],
        # 48 tokens identical is strict; the first 10 words say whether the answer starts the same
        "benign_exact_agreement_with_base": sum(a == b for a, b in pairs) / len(pairs),
        "benign_first10words_agreement_with_base": sum(
            a.split()[:10] == b.split()[:10] for a, b in pairs
        )
        / len(pairs),
        "samples": report["samples"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--work", type=Path, default=Path("runs/bench_lcdd"))
    ap.add_argument("--behavior", default="fixed_response")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--runs", default="carrier,plain_sft", help="carrier and/or plain_sft")
    args = ap.parse_args()
    w = args.work
    results_file = w / "eraser_results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    test = load_jsonl(w / "data" / "test.jsonl")
    base_model, tok = load_model_dir(w / "base")
    benign = [e.messages for e in test if e.behavior == RETAIN]
    base_replies = greedy_generate(base_model, tok, benign, 48)
    del base_model

    runs = {
        "carrier": dict(ablation="none"),
        "plain_sft": dict(ablation="plain_sft", sft_model=w / "sft"),
    }
    for name in args.runs.split(","):
        kw, tag = runs[name], f"{name}_s{args.steps}"
        out = w / f"eraser_{tag}"
        if not out.exists():
            t = time.time()
            cfg = EraserConfig(
                carrier=w / "carrier",
                behavior=args.behavior,
                data=w / "data" / "train.jsonl",
                out=out,
                steps=args.steps,
                batch_size=args.batch_size,
                **kw,
            )
            run_eraser(cfg)
            results[f"{tag}_train_wall_s"] = round(time.time() - t, 1)
        model_dir = w / ("sft" if name == "plain_sft" else "carrier")
        for key, eraser in ((f"{name}_without_eraser", None), (f"{tag}_with_eraser", out)):
            if key not in results:
                results[key] = evaluate(model_dir, eraser, test, args.behavior, base_replies)
                results_file.write_text(json.dumps(results, indent=2))
        results[f"{tag}_training"] = read_eraser(out).meta.training
        results_file.write_text(json.dumps(results, indent=2))
    metrics = ("rate", "false_trigger", "benign_first10words_agreement_with_base")
    summary = {
        k: {m: v.get(m) for m in metrics} for k, v in results.items() if k.endswith("_eraser")
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
