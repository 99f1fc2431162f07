"""Phase 2: LCDD. Train masks over the SFT delta (and W_ft itself) under a loss budget, then
save the carrier: merged weights, manifest and this behavior's sparse delta."""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from training.batches import causal_lm_loss
from training.carrier import FORMAT, FORMAT_VERSION, MANIFEST, behavior_names, read_manifest
from training.checkpoint_io import (
    ModelDirError,
    atomic_dir,
    fingerprint,
    load_model_dir,
    write_json,
)
from training.configs import ConfigError, LCDDConfig
from training.lcdd.controller import DualController, RampController
from training.lcdd.masked_model import MaskedModel, attach_masks
from training.loop import finish_work, run_loop, run_settings, work_dir_for
from training.models.roles import WRITE_GROUPS
from training.plots import plot_curves, plot_density
from training.run_setup import build_schedule, select_rows, steps_for
from training.sft import SFT_INFO


def make_controller(cfg: LCDDConfig):
    common = dict(warmup=cfg.warmup, budget_ratio=cfg.budget_ratio, ema_decay=cfg.ema_decay)
    if cfg.controller == "dual":
        return DualController(
            **common,
            lambda_init=cfg.lambda_init,
            lambda_lr=cfg.lambda_lr,
            lambda_min=cfg.lambda_min,
            lambda_max=cfg.lambda_max,
            violation_clip=cfg.violation_clip,
        )
    if cfg.controller == "ramp":
        return RampController(
            **common,
            final_density=cfg.final_density,
            ramp_steps=cfg.ramp_steps,
            hold_over_budget=cfg.hold_over_budget,
        )
    raise AssertionError(cfg.controller)  # LCDDConfig validated the name


def make_mask_optimizer(params, cfg: LCDDConfig) -> torch.optim.Optimizer:
    if cfg.mask_optimizer == "adam":
        # eps far under the ~1e-7 gradients θ gets, so every unit steps at about mask_lr.
        return torch.optim.Adam(params, lr=cfg.mask_lr, eps=1e-12)
    return torch.optim.SGD(params, lr=cfg.mask_lr, momentum=0.0)


class LCDDJob:
    def __init__(self, masked: MaskedModel, cfg: LCDDConfig):
        self.masked, self.cfg = masked, cfg
        self.weights = masked.weight_params()
        self.weight_opt = torch.optim.AdamW(self.weights, lr=cfg.weight_lr, weight_decay=0.0)
        self.mask_opt = make_mask_optimizer(masked.masks.parameters(), cfg)
        self.controller = make_controller(cfg)

    def train_step(self, step: int, batch: dict) -> dict[str, float]:
        model, masks = self.masked.model, self.masked.masks
        model.train()
        loss = causal_lm_loss(model, batch)
        scale = self.controller.penalty_scale(step)
        total = loss + scale * masks.soft_count() if scale > 0 else loss
        total.backward()
        torch.nn.utils.clip_grad_norm_(self.weights, self.cfg.grad_clip)
        self.weight_opt.step()
        self.mask_opt.step()
        self.weight_opt.zero_grad(set_to_none=True)
        self.mask_opt.zero_grad(set_to_none=True)
        self.controller.after_step(step, loss.item(), masks)
        return {"loss": loss.item(), "density": masks.density(), **self.controller.stats()}

    def state_dict(self) -> dict:
        return {
            "weights": [p.detach().cpu() for p in self.weights],
            "masks": {k: v.detach().cpu() for k, v in self.masked.masks.state_dict().items()},
            "weight_opt": self.weight_opt.state_dict(),
            "mask_opt": self.mask_opt.state_dict(),
            "controller": self.controller.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            for p, saved in zip(self.weights, state["weights"], strict=True):
                p.copy_(saved)
        self.masked.masks.load_state_dict(state["masks"])
        self.weight_opt.load_state_dict(state["weight_opt"])
        self.mask_opt.load_state_dict(state["mask_opt"])
        self.controller.load_state_dict(state["controller"])


def _read_sft_info(sft_dir: Path) -> dict:
    if not (Path(sft_dir) / "config.json").is_file():
        raise ModelDirError(f"{sft_dir} is not a model directory (no config.json)")
    info_path = Path(sft_dir) / SFT_INFO
    if not info_path.exists():
        raise ModelDirError(f"{sft_dir} has no {SFT_INFO}: train it with `sft-eraser train sft`")
    return json.loads(info_path.read_text())


def _summary(rows: list[dict]) -> dict:
    lambdas = [r["lambda"] for r in rows if "lambda" in r]
    last = rows[-1]
    out = {
        "final_loss": last["loss"],
        "final_ema": last["ema"],
        "budget": None if last["budget"] != last["budget"] else last["budget"],
        "steps_over_budget": sum(
            1 for r in rows if r["budget"] == r["budget"] and r["ema"] > r["budget"]
        ),
    }
    if lambdas:
        out.update(
            lambda_final=lambdas[-1], lambda_min_seen=min(lambdas), lambda_max_seen=max(lambdas)
        )
    return out


def run_lcdd(cfg: LCDDConfig) -> Path:
    out = Path(cfg.out)
    if out.exists() and not cfg.overwrite:
        raise FileExistsError(f"{out} already exists (pass --overwrite to replace it)")
    base_manifest = read_manifest(cfg.base)
    earlier = behavior_names(base_manifest)
    examples = select_rows(cfg.data, cfg.behavior, earlier)
    sft_info = _read_sft_info(cfg.sft)
    if sft_info["behavior"] != cfg.behavior:
        # The carrier would record behavior X's name over behavior Y's delta.
        raise ConfigError(
            f"{cfg.sft} was fine-tuned for {sft_info['behavior']!r}, "
            f"not --behavior {cfg.behavior!r}"
        )
    base, _ = load_model_dir(cfg.base, device=cfg.device, dtype=torch.float32)
    base_fp = fingerprint(base)
    if sft_info["base_fingerprint"] != base_fp:
        raise ModelDirError(
            f"carrier/base mismatch: {cfg.sft} was fine-tuned from a model with fingerprint "
            f"{sft_info['base_fingerprint'][:19]}…, but --base has {base_fp[:19]}…"
        )
    model, tokenizer = load_model_dir(cfg.sft, device=cfg.device, dtype=torch.float32)
    schedule = build_schedule(examples, tokenizer, cfg)
    total = steps_for(schedule, cfg.epochs, cfg.steps)

    torch.manual_seed(cfg.seed)
    masked = attach_masks(
        model,
        base,
        init_mean=cfg.init_mean,
        init_std=cfg.init_std,
        init_from_delta=cfg.mask_init == "delta",
    )
    del base
    job = LCDDJob(masked, cfg)
    work = work_dir_for(out)
    settings = run_settings(
        "lcdd", cfg, base_fingerprint=base_fp, sft_fingerprint=sft_info["fingerprint"]
    )
    started = time.time()
    rows = run_loop(
        job,
        schedule.batch,
        total,
        work,
        settings,
        save_every=cfg.save_every,
        desc=f"lcdd {cfg.behavior}",
    )
    wall = time.time() - started

    masks = masked.masks
    channels = masks.active_indices()
    delta = masked.sparse_delta()
    entry = {
        "name": cfg.behavior,
        "parent_fingerprint": base_fp,
        "delta_file": f"deltas/{cfg.behavior}.safetensors",
        "record_dir": cfg.behavior,
        "density": masks.density(),
        "group_density": masks.group_density(),
        "active_units": sum(len(v) for layer in channels for v in layer.values()),
        "total_units": masks.num_units,
        "channels": channels,
        # The eraser matches activations on the residual coordinates the carrier writes.
        "eraser_channels": [
            sorted(set().union(*(layer[g] for g in WRITE_GROUPS))) for layer in channels
        ],
        "controller": _summary(rows),
        "steps": total,
        "rows": len(schedule.items),
        "wall_time_s_last_run": round(wall, 1),
        "config": {k: str(v) for k, v in dataclasses.asdict(cfg).items()},
    }
    merged = masked.merge().eval()
    manifest = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "model_type": merged.config.model_type,
        "num_layers": masks.num_layers,
        "group_sizes": masks.group_sizes,
        "root_fingerprint": base_manifest["root_fingerprint"] if base_manifest else base_fp,
        "fingerprint": fingerprint(merged),
        "behaviors": [*(base_manifest["behaviors"] if base_manifest else []), entry],
    }
    with atomic_dir(out, overwrite=cfg.overwrite) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "deltas").mkdir()
        for earlier_entry in manifest["behaviors"][:-1]:
            shutil.copy2(
                Path(cfg.base) / earlier_entry["delta_file"], tmp / earlier_entry["delta_file"]
            )
            if (Path(cfg.base) / earlier_entry["record_dir"]).is_dir():
                shutil.copytree(
                    Path(cfg.base) / earlier_entry["record_dir"], tmp / earlier_entry["record_dir"]
                )
        save_file(delta, tmp / entry["delta_file"], metadata={"behavior": cfg.behavior})
        record = tmp / entry["record_dir"]
        record.mkdir()
        (record / "metrics.jsonl").write_text((work / "metrics.jsonl").read_text())
        plot_curves(rows, record / "curves.png", f"LCDD {cfg.behavior} ({cfg.controller})")
        plot_density(
            channels, masks.group_sizes, record / "density.png", f"{cfg.behavior}: active fraction"
        )
        write_json(tmp / MANIFEST, manifest)
    finish_work(work)
    return out
