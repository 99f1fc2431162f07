"""Phase 1: full SFT of every decoder projection (norms, embeddings and head stay at base)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch

from training.batches import IGNORE, causal_lm_loss, without_rows_of
from training.carrier import apply_delta, behavior_names, load_delta, read_manifest
from training.checkpoint_io import atomic_dir, fingerprint, load_model_dir, write_json
from training.configs import SFTConfig
from training.loop import finish_work, run_loop, run_settings, work_dir_for
from training.models.roles import find_roles
from training.plots import plot_curves
from training.run_setup import build_schedule, select_rows, steps_for

SFT_INFO = "sft.json"


def projection_params(model) -> list[torch.nn.Parameter]:
    """Weights and biases of every masked-role projection: all that SFT and LCDD train."""
    params = []
    for roles in find_roles(model):
        for proj in roles.projections:
            params.append(proj.module.weight)
            if getattr(proj.module, "bias", None) is not None:
                params.append(proj.module.bias)
    return params


class SFTJob:
    def __init__(self, model, cfg: SFTConfig, earlier_deltas: dict | None = None):
        self.model = model
        for p in model.parameters():
            p.requires_grad_(False)
        self.params = projection_params(model)
        for p in self.params:
            p.requires_grad_(True)
        self.cfg = cfg
        self.opt = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.earlier_deltas = earlier_deltas or {}

    def dropped(self, step: int, batch: dict) -> list[str]:
        """The base carrier's behaviors whose deltas this step trains without (seeded by step, so
        a resumed run drops the same ones); none if that would leave no reply token in the loss.

        Sorted by name: the deltas come off and go back in that order, and float sums depend on
        it (a set's order changes from one process to the next, and so did the SFT weights)."""
        gen = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + step)
        names = sorted(self.earlier_deltas)
        draws = torch.rand(len(names), generator=gen).tolist()
        dropped = [n for n, u in zip(names, draws, strict=True) if u < self.cfg.delta_dropout]
        left = without_rows_of(batch, dropped)["labels"] != IGNORE
        return dropped if left.any() else []

    def train_step(self, step: int, batch: dict) -> dict[str, float]:
        self.model.train()
        dropped = self.dropped(step, batch)
        for name in dropped:
            apply_delta(self.model, self.earlier_deltas[name], -1.0)
        try:
            loss = causal_lm_loss(self.model, without_rows_of(batch, dropped))
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
        finally:
            for name in dropped:
                apply_delta(self.model, self.earlier_deltas[name], 1.0)
        return {"loss": loss.item(), "grad_norm": grad_norm.item(), "dropped": len(dropped)}

    def state_dict(self) -> dict:
        return {"params": [p.detach().cpu() for p in self.params], "opt": self.opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            for p, saved in zip(self.params, state["params"], strict=True):
                p.copy_(saved)
        self.opt.load_state_dict(state["opt"])


def run_sft(cfg: SFTConfig) -> Path:
    out = Path(cfg.out)
    if out.exists() and not cfg.overwrite:
        raise FileExistsError(f"{out} already exists (pass --overwrite to replace it)")
    manifest = read_manifest(cfg.base)
    model, tokenizer = load_model_dir(cfg.base, device=cfg.device, dtype=torch.float32)
    examples = select_rows(cfg.data, cfg.behavior, behavior_names(manifest))
    schedule = build_schedule(examples, tokenizer, cfg)
    total = steps_for(schedule, cfg.epochs)
    base_fp = fingerprint(model)
    torch.manual_seed(cfg.seed)
    earlier = behavior_names(manifest) if cfg.delta_dropout > 0 else []
    job = SFTJob(model, cfg, {name: load_delta(cfg.base, name) for name in earlier})
    work = work_dir_for(out)
    settings = run_settings("sft", cfg, base_fingerprint=base_fp)
    started = time.time()
    rows = run_loop(
        job,
        schedule.batch,
        total,
        work,
        settings,
        save_every=cfg.save_every,
        desc=f"sft {cfg.behavior}",
    )
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)

    info = {
        "behavior": cfg.behavior,
        "base": str(cfg.base),
        "base_fingerprint": base_fp,
        "fingerprint": fingerprint(model),
        "rows": len(schedule.items),
        "steps": total,
        "final_loss": rows[-1]["loss"],
        "wall_time_s_this_run": round(time.time() - started, 1),
        "config": {k: str(v) for k, v in dataclasses.asdict(cfg).items()},
    }
    with atomic_dir(out, overwrite=cfg.overwrite) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / SFT_INFO, info)
        (tmp / "metrics.jsonl").write_text((work / "metrics.jsonl").read_text())
        plot_curves(rows, tmp / "curves.png", f"SFT {cfg.behavior}")
    finish_work(work)
    return out
