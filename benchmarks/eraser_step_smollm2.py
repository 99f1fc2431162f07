"""Eraser step time with the vocabulary projection on every position vs. only on the KL positions
(`logits_to_keep`), interleaved in one process on a SmolLM2 carrier (reply KL, batch 4).

    python benchmarks/eraser_step_smollm2.py --carrier runs/demo/carrier_all_caps \
        --data runs/demo/data/train.jsonl --behavior refusal --steps 20
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

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
    prefix = torch.nn.Parameter(torch.randn(cfg.num_tokens, hidden) * 0.05)
    kept = TargetStats.logits_to_keep

    def step(i: int) -> float:
        rows = [(4 * i + j) % len(encoded) for j in range(4)]
        ids, mask = left_pad([place.encoded[r] for r in rows], tok.pad_token_id)
        t0 = time.perf_counter()
        place.loss_fn(model, prefix, ids, mask, place.stats, rows)["loss"].backward()
        prefix.grad = None
        return time.perf_counter() - t0

    times = {"all positions": [], "KL positions only": []}
    step(0)  # warm-up
    for i in range(args.steps):
        for mode in times:
            TargetStats.logits_to_keep = kept if mode != "all positions" else property(lambda s: 0)
            times[mode].append(step(i))
    TargetStats.logits_to_keep = kept
    for mode, t in times.items():
        print(f"{mode}: {sum(t) / len(t):.3f} s per step (median {sorted(t)[len(t) // 2]:.3f})")


if __name__ == "__main__":
    main()
