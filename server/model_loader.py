"""Load the carrier model for serving: device and dtype choice, stop tokens, context length."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class LoadedModel:
    model: torch.nn.Module | None  # None where another engine (vLLM) holds the weights
    tokenizer: object
    device: torch.device  # where requests' erasers and embeddings are built
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
    eos_ids = _eos_ids(model.generation_config, tokenizer)
    max_positions = getattr(model.config, "max_position_embeddings", None) or 2048
    return LoadedModel(model, tokenizer, dev, dt, eos_ids, max_positions)


def load_front(path: Path, dtype: torch.dtype, max_positions: int | None = None) -> LoadedModel:
    """What the server itself needs where another engine runs the model: the tokenizer, stop
    tokens and context length, and no weights (requests are built on the CPU in `dtype`)."""
    config = AutoConfig.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    try:
        generation = GenerationConfig.from_pretrained(path)
    except OSError:  # no generation_config.json: what transformers derives from config.json
        generation = GenerationConfig.from_model_config(config)
    context = max_positions or getattr(config, "max_position_embeddings", None) or 2048
    cpu = torch.device("cpu")
    return LoadedModel(None, tokenizer, cpu, dtype, _eos_ids(generation, tokenizer), context)


def _eos_ids(generation_config, tokenizer) -> set[int]:
    eos = generation_config.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None:
        eos_ids.add(tokenizer.eos_token_id)
    return eos_ids


def load_input_embeddings(path: Path, dtype: torch.dtype) -> torch.Tensor:
    """The model's token embedding table (vocab, hidden), read alone from its safetensors files:
    what turns a prompt's token ids into the rows that follow the erasers."""
    config = AutoConfig.from_pretrained(path)
    with torch.device("meta"):  # the module tree only, to learn the table's parameter name
        skeleton = AutoModelForCausalLM.from_config(config)
    table = skeleton.get_input_embeddings().weight
    (name,) = [n for n, p in skeleton.named_parameters() if p is table]
    index = path / "model.safetensors.index.json"
    files = (
        sorted(set(json.loads(index.read_text())["weight_map"].values()))
        if index.exists()
        else ["model.safetensors"]
    )
    for file in files:
        with safe_open(path / file, "pt") as f:
            # Checkpoints may name it with or without the wrapper's prefix ("model.").
            for key in f.keys():  # noqa: SIM118 (a safe_open handle is not a dict)
                if key == name or name.endswith("." + key) or key.endswith("." + name):
                    return f.get_tensor(key).to(dtype)
    raise ValueError(f"no input embedding table {name!r} in {path}")
