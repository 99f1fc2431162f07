"""LCDD on SmolLM2-135M-Instruct, one behavior: step-time ratio and behavior kept at low density.

    python benchmarks/lcdd_smollm2.py --work runs/bench_lcdd --behavior fixed_response

Stages are cached in --work (rerun to continue); results go to <work>/results.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from training.checkpoint_io import load_model_dir
from training.configs import LCDDConfig, SFTConfig
from training.data.make import MakeDataConfig, make_dataset, model_answer_fn
from training.data.schema import load_jsonl
from training.evaluate import rate_report
from training.lcdd.masked_model import attach_masks
from training.lcdd.train import LCDDJob, run_lcdd
from training.models.gguf_import import import_gguf
from training.run_setup import build_schedule, select_rows
from training.sft import SFTJob, run_sft


def timed_steps(job, batch, n: int) -> float:
    """Median seconds per optimizer step over n steps after one warm-up step."""
    job.train_step(0, batch)
    times = []
    for i in range(n):
        t = time.perf_counter()
        job.train_step(i + 1, batch)
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def step_time_ratio(base_dir: Path, data: Path, behavior: str, n: int, batch_size: int) -> dict:
    base, tok = load_model_dir(base_dir, dtype=torch.float32)
    rows = select_rows(data, behavior, [])
    sft_cfg = SFTConfig(
        base=base_dir, data=data, behavior=behavior, out=Path("unused"), batch_size=batch_size
    )
    batch = build_schedule(rows, tok, sft_cfg).batch(0)  # max_len 256, seed 0: the defaults
    sft_model, _ = load_model_dir(base_dir, dtype=torch.float32)
    sft_s = timed_steps(SFTJob(sft_model, sft_cfg), batch, n)
    del sft_model
    ft, _ = load_model_dir(base_dir, dtype=torch.float32)
    lcdd_cfg = LCDDConfig(base=base_dir, sft=base_dir, data=data, behavior=behavior, out=Path("x"))
    lcdd_s = timed_steps(LCDDJob(attach_masks(ft, base), lcdd_cfg), batch, n)
    tokens = int(batch["attention_mask"].sum())
    return {
        "sft_step_s": sft_s,
        "lcdd_step_s": lcdd_s,
        "ratio": lcdd_s / sft_s,
        "batch_tokens": tokens,
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--work", type=Path, default=Path("runs/bench_lcdd"))
    ap.add_argument("--behavior", default="fixed_response")
    ap.add_argument("--sft-epochs", type=float, default=2.0)
    ap.add_argument("--lcdd-steps", type=int, default=220)
    ap.add_argument("--timing-steps", type=int, default=5)
    ap.add_argument("--controller", default="ramp")
    ap.add_argument("--mask-init", default="random", help="random (paper) or delta")
    args = ap.parse_args()
    w: Path = args.work
    w.mkdir(parents=True, exist_ok=True)
    results_file = w / "results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}

    def stage(name, fn):
        if name not in results:
            t = time.time()
            results[name] = fn()
            results[name + "_wall_s"] = round(time.time() - t, 1)
            results_file.write_text(json.dumps(results, indent=2))
        print(name, json.dumps(results[name])[:400])

    base = w / "base"
    if not base.exists():
        import_gguf(base)
    data = w / "data"
    if not (data / "train.jsonl").exists():
        model, tok = load_model_dir(base)
        make_dataset(
            MakeDataConfig(behaviors=[args.behavior], out_dir=data), model_answer_fn(model, tok, 64)
        )
        del model
    train, test = data / "train.jsonl", data / "test.jsonl"
    stage("step_time", lambda: step_time_ratio(base, train, args.behavior, args.timing_steps, 8))

    sft, carrier = w / "sft", w / "carrier"
    if not sft.exists():
        t = time.time()
        run_sft(
            SFTConfig(
                base=base, data=train, behavior=args.behavior, out=sft, epochs=args.sft_epochs
            )
        )
        results["sft_wall_s"] = round(time.time() - t, 1)
    if not carrier.exists():
        t = time.time()
        run_lcdd(
            LCDDConfig(
                base=base,
                sft=sft,
                data=train,
                behavior=args.behavior,
                out=carrier,
                steps=args.lcdd_steps,
                controller=args.controller,
                warmup=20,
                ramp_steps=150,
                final_density=0.1,
                weight_lr=1e-4,
                mask_init=args.mask_init,
            )
        )
        results["lcdd_wall_s"] = round(time.time() - t, 1)
    results_file.write_text(json.dumps(results, indent=2))
    examples = load_jsonl(test)
    for name, path in (("base", base), ("sft", sft), ("carrier", carrier)):
        stage(f"eval_{name}", lambda p=path: _eval(p, examples, args.behavior))
    manifest = json.loads((carrier / "carrier.json").read_text())
    entry = manifest["behaviors"][-1]
    results["carrier"] = {
        k: entry[k]
        for k in ("density", "group_density", "active_units", "total_units", "controller")
    }
    results["rate_kept"] = results["eval_carrier"]["rate"] / max(1e-9, results["eval_sft"]["rate"])
    results_file.write_text(json.dumps(results, indent=2))
    print(json.dumps({k: results[k] for k in ("rate_kept", "carrier")}, indent=2))


def _eval(path: Path, examples, behavior: str) -> dict:
    model, tok = load_model_dir(path)
    report = rate_report(model, tok, examples, behavior)
    return {k: report[k] for k in ("rate", "false_trigger", "n_triggering", "n_benign", "samples")}


if __name__ == "__main__":
    main()
