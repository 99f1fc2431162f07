"""One-line SFT and LCDD runs on tiny models, short enough for unit tests, untrained erasers and a
stand-in eraser loss."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from eraser_store import write_eraser
from training.carrier import read_manifest
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


def random_eraser(out, carrier, behavior="refusal", fingerprint=None):
    """An untrained eraser of `behavior` for `carrier`: random embeddings, for tests of where
    erasers go rather than what they do."""
    manifest = read_manifest(carrier)
    config = json.loads((carrier / "config.json").read_text())
    emb = torch.randn(3, config["hidden_size"], generator=torch.Generator().manual_seed(1))
    return write_eraser(
        out,
        emb,
        name=f"erase-{behavior}",
        behavior=behavior,
        carrier_fingerprint=fingerprint or manifest["fingerprint"],
        num_layers=config["num_hidden_layers"],
        num_attention_heads=config["num_attention_heads"],
        channel_count=0,
        training={"steps": 0},
    )


class RecordingLoss:
    """Stands in for EraserLoss: records the prefix each step feeds the model."""

    def __init__(self):
        self.prefixes = []

    def __call__(self, model, prefix, input_ids, mask, stats, rows, trained=None):
        self.prefixes.append(prefix.detach().clone())
        loss = (prefix - 1).pow(2).mean() + trained.pow(2).mean()
        return {"loss": loss, "act": loss.detach(), "hold": loss.detach()}
