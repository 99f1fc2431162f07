"""Carrier directories: manifest, per-behavior sparse deltas, and the model "without behavior k".

Layout of a carrier directory (a plain HF model directory plus):
    carrier.json                 manifest (format below)
    deltas/<behavior>.safetensors  masked part of W_ft − W_base per projection (rows, cols, weight)
    <behavior>/metrics.jsonl, curves.png, density.png   training record of that behavior
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from training.checkpoint_io import ModelDirError, default_dtype, load_model_dir
from training.models.roles import find_roles

MANIFEST = "carrier.json"
FORMAT = "sft-eraser-carrier"
FORMAT_VERSION = 1


def read_manifest(carrier_dir: Path) -> dict | None:
    """The carrier manifest, or None for a plain model directory."""
    path = Path(carrier_dir) / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ModelDirError(f"{path}: not valid JSON ({e})") from None
    if manifest.get("format") != FORMAT:
        raise ModelDirError(f"{path}: not a carrier manifest (format={manifest.get('format')!r})")
    return manifest


def behavior_names(manifest: dict | None) -> list[str]:
    return [b["name"] for b in manifest["behaviors"]] if manifest else []


def behavior_entry(manifest: dict, name: str) -> dict:
    for b in manifest["behaviors"]:
        if b["name"] == name:
            return b
    held = ", ".join(behavior_names(manifest)) or "none"
    raise ModelDirError(f"unknown behavior {name!r}; this carrier holds: {held}")


def load_delta(carrier_dir: Path, behavior: str) -> dict[str, torch.Tensor]:
    manifest = read_manifest(carrier_dir)
    if manifest is None:
        raise ModelDirError(f"{carrier_dir} is not a carrier (no {MANIFEST})")
    entry = behavior_entry(manifest, behavior)
    return load_file(Path(carrier_dir) / entry["delta_file"])


@torch.no_grad()
def apply_delta(model, delta: dict[str, torch.Tensor], sign: float) -> None:
    """W[rows, cols] += sign·Δ for every projection in `delta` (sign −1 removes a behavior)."""
    projections = {p.name: p for r in find_roles(model) for p in r.projections}
    names = {k.rsplit(".", 1)[0] for k in delta}
    for name in names:
        if name not in projections:
            raise ModelDirError(f"delta names projection {name}, which this model does not have")
        proj = projections[name]
        rows, cols = delta[f"{name}.rows"], delta[f"{name}.cols"]
        w = proj.module.weight
        d = (sign * delta[f"{name}.weight"]).to(w.device, w.dtype)
        if proj.out_dim_first:
            w[rows[:, None].to(w.device), cols[None, :].to(w.device)] += d
        else:
            w[cols[:, None].to(w.device), rows[None, :].to(w.device)] += d.T
        if f"{name}.bias" in delta:
            b = proj.module.bias
            b[rows.to(b.device)] += (sign * delta[f"{name}.bias"]).to(b.device, b.dtype)


def load_without(carrier_dir: Path, *behaviors: str, device: str = "auto", dtype=None):
    """The target model of an eraser (or a stack of erasers): the carrier minus the masked delta
    of each named behavior.

    The delta is removed in fp32, then the model takes the device's dtype (bf16 on CUDA), so the
    subtraction is not rounded to bf16 first.
    """
    if not behaviors:
        raise ValueError("load_without needs at least one behavior")
    model, tokenizer = load_model_dir(carrier_dir, device=device, dtype=torch.float32)
    for behavior in behaviors:
        apply_delta(model, load_delta(carrier_dir, behavior), sign=-1.0)
    return model.to(dtype or default_dtype(model.device)), tokenizer
