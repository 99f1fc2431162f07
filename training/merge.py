"""Merge carriers trained from the same base into one: W = W_base + Σ_k Δ_k.

Each behavior can be fine-tuned and made sparse on its own from the base model (independent
deltas), then merged. Unlike stacking (behavior k trained on top of the carrier of 1..k-1), no
delta learns to lean on another, so "the carrier without behavior k" keeps the others as they
were trained (docs/training.md, docs/results.md).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from training.carrier import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    apply_delta,
    load_delta,
    read_manifest,
)
from training.checkpoint_io import (
    ModelDirError,
    atomic_dir,
    fingerprint,
    load_model_dir,
    write_json,
)


def _read_carriers(carriers: list[Path], base_fp: str) -> list[tuple[Path, dict]]:
    if len(carriers) < 2:
        raise ModelDirError(f"merge needs at least two carriers, got {len(carriers)}")
    out, seen = [], {}
    for path in carriers:
        manifest = read_manifest(path)
        if manifest is None:
            raise ModelDirError(f"{path} is not a carrier (no {MANIFEST})")
        if manifest["root_fingerprint"] != base_fp:
            raise ModelDirError(
                f"{path} was not trained from --base: its root model has fingerprint "
                f"{manifest['root_fingerprint'][:19]}…, --base has {base_fp[:19]}…"
            )
        for entry in manifest["behaviors"]:
            if entry["name"] in seen:
                raise ModelDirError(
                    f"behavior {entry['name']!r} is in both {seen[entry['name']]} and {path}"
                )
            seen[entry["name"]] = path
        out.append((Path(path), manifest))
    return out


def shared_units(a: dict, b: dict) -> int:
    """Mask units (channels) two behavior entries both use, over all layers and groups."""
    return sum(
        len(set(la[g]) & set(lb[g]))
        for la, lb in zip(a["channels"], b["channels"], strict=True)
        for g in la
    )


def merge_carriers(base: Path, carriers: list[Path], out: Path, *, overwrite: bool = False) -> Path:
    """Write a carrier holding every behavior of `carriers`, in the order given.

    Deltas are added to the base in fp32, in that order; where two behaviors share channels
    their deltas add up (the CLI prints how many units they share).
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists (pass --overwrite to replace it)")
    model, tokenizer = load_model_dir(base, device="cpu", dtype=torch.float32)
    base_fp = fingerprint(model)
    sources = _read_carriers(carriers, base_fp)
    entries = []
    for path, manifest in sources:
        for entry in manifest["behaviors"]:
            apply_delta(model, load_delta(path, entry["name"]), sign=1.0)
            entries.append((path, {**entry, "merged_from": str(path)}))
    first = sources[0][1]
    manifest = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "model_type": first["model_type"],
        "num_layers": first["num_layers"],
        "group_sizes": first["group_sizes"],
        "root_fingerprint": base_fp,
        "fingerprint": fingerprint(model),
        "behaviors": [entry for _, entry in entries],
    }
    with atomic_dir(out, overwrite=overwrite) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "deltas").mkdir()
        for path, entry in entries:
            shutil.copy2(path / entry["delta_file"], tmp / entry["delta_file"])
            if (path / entry["record_dir"]).is_dir():
                shutil.copytree(path / entry["record_dir"], tmp / entry["record_dir"])
        write_json(tmp / MANIFEST, manifest)
    return out
