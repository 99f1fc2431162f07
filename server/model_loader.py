"""Load the carrier model for serving: device and dtype choice, stop tokens, context length."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    device: torch.device
    dtype: torch.dtype
    eos_ids: set[int]
    max_positions: int


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but CUDA is not available")
    return dev


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        # bf16 matmul has no native support on common server CPUs and is very slow there.
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return DTYPES[dtype]


def load_carrier(path: Path, device: str = "auto", dtype: str = "auto") -> LoadedModel:
    dev = pick_device(device)
    dt = pick_dtype(dtype, dev)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dt).to(dev).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    eos = model.generation_config.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None:
        eos_ids.add(tokenizer.eos_token_id)
    max_positions = getattr(model.config, "max_position_embeddings", None) or 2048
    return LoadedModel(model, tokenizer, dev, dt, eos_ids, max_positions)
