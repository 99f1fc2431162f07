"""Where an eraser step's time goes, on a SmolLM2 carrier (reply KL, batch 4): the vocabulary
projection on every position vs. only on the KL positions (`logits_to_keep`), interleaved in one
process; with --widths, the step time at other row widths (soft tokens, longer prompts); with
--batch-sizes, at 1, 2, 4 and 8 rows per step; with --flops, a step's floating-point operations
and the rate it runs at, beside a plain matrix product's, on 2 threads and on 1.

    python benchmarks/eraser_step_smollm2.py --carrier runs/demo/carrier_all_caps \
        --data runs/demo/data/train.jsonl --behavior refusal --steps 20 \
        [--widths | --batch-sizes | --flops]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from eraser_store.prompting import chat_prompt_ids
from training.carrier import behavior_entry, read_manifest
from training.checkpoint_io import load_model_dir
from training.configs import EraserConfig
from training.data.generation import left_pad
from training.eraser.objective import TargetStats
from training.eraser.train import build_placement, pick_prompts


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--carrier", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--behavior", default="refusal")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per mode")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument(
        "--widths",
        action="store_true",
        help="time steps with 1, 4 and 20 soft tokens and with 20 and 40 prompt tokens more",
    )
    mode.add_argument("--batch-sizes", action="store_true", help="time steps of 1, 2, 4 and 8 rows")
    mode.add_argument(
        "--flops",
        action="store_true",
        help="count a step's floating-point operations; its rate against a matrix product's",
    )
    args = ap.parse_args()
    cfg = EraserConfig(
        carrier=args.carrier,
        behavior=args.behavior,
        data=args.data,
        out=Path("unused"),
        batch_size=4,
        kl_on="reply",
        kl_weight=20,
        match="per_prompt",
        device="cpu",
    )
    manifest = read_manifest(cfg.carrier)
    model, tok = load_model_dir(cfg.carrier, device="cpu")
    model.requires_grad_(False)
    hidden = model.config.hidden_size
    prompts = pick_prompts(cfg.data, cfg.behavior, 32, seed=0)
    encoded = [(g, chat_prompt_ids(tok, m)) for g, m in prompts]
    channels = behavior_entry(manifest, cfg.behavior)["eraser_channels"]
    place = build_placement(cfg, manifest, encoded, (cfg.behavior,), channels, hidden, model)

    def step(
        i: int, num_tokens: int = cfg.num_tokens, longer: int = 0, batch: int = cfg.batch_size
    ) -> tuple[float, int]:
        """Seconds of one step on the i-th `batch` rows and the rows' width; `longer`: that many
        more prompt tokens in front (the rows' own first tokens again: only the width matters)."""
        prefix = torch.nn.Parameter(torch.randn(num_tokens, hidden) * 0.05)
        rows = [(batch * i + j) % len(encoded) for j in range(batch)]
        ids, mask = left_pad([place.encoded[r] for r in rows], tok.pad_token_id)
        ids, mask = torch.cat([ids[:, :longer], ids], 1), torch.cat([mask[:, :longer], mask], 1)
        t0 = time.perf_counter()
        place.loss_fn(model, prefix, ids, mask, place.stats, rows)["loss"].backward()
        return time.perf_counter() - t0, num_tokens + ids.shape[1]

    step(0)  # warm-up
    if args.batch_sizes:
        for batch in (1, 2, 4, 8):
            t = median([step(i, batch=batch)[0] for i in range(args.steps)])
            print(f"{batch} rows: median {t:.3f} s per step, {t / batch:.3f} s per row")
        return
    if args.flops:
        with FlopCounterMode(display=False) as counter:
            step(0)
        gflop = counter.get_total_flops() / 1e9
        print(f"one step (4 rows): {gflop:.1f} GFLOP")
        for threads in (2, 1):
            torch.set_num_threads(threads)
            step(0)
            t = median([step(0)[0] for _ in range(args.steps)])
            print(
                f"{threads} thread(s): median step {t:.3f} s, {gflop / t:.0f} GFLOP/s; "
                f"matrix product: {matmul_rate(model.config):.0f} GFLOP/s"
            )
        return
    if args.widths:
        for num_tokens, longer in [(1, 0), (4, 0), (20, 0), (20, 20), (20, 40)]:
            runs = [step(i, num_tokens, longer) for i in range(args.steps)]
            width = sum(w for _, w in runs) / len(runs)
            print(
                f"{num_tokens} soft tokens, prompts +{longer}: mean width {width:.0f}, "
                f"median {median([seconds for seconds, _ in runs]):.3f} s per step"
            )
        return
    times = {"all positions": [], "KL positions only": []}
    kept = TargetStats.logits_to_keep
    for i in range(args.steps):
        for mode in times:
            TargetStats.logits_to_keep = kept if mode != "all positions" else property(lambda s: 0)
            times[mode].append(step(i)[0])
    TargetStats.logits_to_keep = kept
    for mode, t in times.items():
        print(f"{mode}: {sum(t) / len(t):.3f} s per step (median {median(t):.3f})")


def median(times: list[float]) -> float:
    """The middle time (the upper one of an even count)."""
    return sorted(times)[len(times) // 2]


def matmul_rate(config, repeats: int = 200) -> float:
    """GFLOP/s of the model's MLP up-projection on 360 positions (4 rows of 90): what the
    cores give to the products a step is made of."""
    a = torch.randn(360, config.hidden_size)
    b = torch.randn(config.hidden_size, config.intermediate_size)
    for _ in range(5):
        a @ b
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * a.shape[0] * a.shape[1] * b.shape[1] * repeats / (time.perf_counter() - t0) / 1e9


if __name__ == "__main__":
    main()
