"""Model directories on disk: atomic save, load, and a fingerprint of the weights."""

from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from eraser_store.atomic import atomic_dir as published_dir
from eraser_store.atomic import write_atomic

COMPLETE_MARKER = "config.json"


class ModelDirError(ValueError):
    """A model or carrier directory that is missing, incomplete or inconsistent."""


@contextmanager
def atomic_dir(out: Path, *, overwrite: bool = False):
    """Yield a temporary sibling of `out`; it is renamed to `out` only when the block succeeds.

    A crash leaves `out` as it was (absent or the old one): never a half-written directory
    that looks complete.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise ModelDirError(f"{out} already exists (pass --overwrite to replace it)")
    with published_dir(out, replace=overwrite) as tmp:
        yield tmp


def write_json(path: Path, obj) -> None:
    write_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_model_dir(model, tokenizer, out: Path, *, overwrite: bool = False) -> None:
    """Save a plain HF checkpoint (safetensors, config, tokenizer) atomically."""
    with atomic_dir(out, overwrite=overwrite) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)


def select_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def default_dtype(device: torch.device) -> torch.dtype:
    # bf16 matmul has no native support on this project's CPUs and is very slow there.
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def load_model_dir(path: Path, *, device: str = "auto", dtype: torch.dtype | None = None):
    """Load a model directory written by this project (or any HF causal-LM checkpoint)."""
    path = Path(path)
    if not (path / COMPLETE_MARKER).is_file():
        raise ModelDirError(f"{path} is not a model directory (no {COMPLETE_MARKER})")
    dev = select_device(device)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or default_dtype(dev))
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return model.to(dev).eval(), tokenizer


def fingerprint(model) -> str:
    """sha256 over every parameter and buffer of the state dict, by sorted name.

    Tied weights count once per name, which is stable across save/load.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
    return "sha256:" + digest.hexdigest()
