"""One-line SFT and LCDD runs on tiny models, short enough for unit tests."""

from __future__ import annotations

from pathlib import Path

from training.configs import LCDDConfig, SFTConfig
from training.lcdd.train import run_lcdd
from training.sft import run_sft


def sft(base: Path, data: Path, behavior: str, out: Path, **kw) -> Path:
    cfg = SFTConfig(
        base=base, data=data / "train.jsonl", behavior=behavior, out=out, lr=1e-3, epochs=1, **kw
    )
    return run_sft(cfg)


def lcdd(base: Path, sft_dir: Path, data: Path, behavior: str, out: Path, **kw) -> Path:
    args = dict(
        steps=4, controller="ramp", warmup=1, ramp_steps=2, final_density=0.5, weight_lr=1e-3
    )
    cfg = LCDDConfig(
        base=base,
        sft=sft_dir,
        data=data / "train.jsonl",
        behavior=behavior,
        out=out,
        **{**args, **kw},
    )
    return run_lcdd(cfg)
