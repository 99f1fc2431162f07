"""Tiny random models with a byte-level tokenizer: smoke runs and tests, no download."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    LlamaConfig,
    MistralConfig,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen3Config,
)

from training.checkpoint_io import save_model_dir
from training.models.chat_templates import CHATML_TEMPLATE, IM_END, IM_START

PAD = "<|pad|>"

FAMILIES = ("llama", "qwen2", "qwen3", "mistral", "gpt2")


def byte_level_core() -> Tokenizer:
    """The 256 byte symbols, no merges and no special tokens."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {symbol: i for i, symbol in enumerate(sorted(alphabet))}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    return core


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level tokenizer: 256 byte symbols plus the ChatML special tokens (no merges)."""
    tok = PreTrainedTokenizerFast(
        tokenizer_object=byte_level_core(),
        bos_token=IM_START,
        eos_token=IM_END,
        pad_token=PAD,
        additional_special_tokens=[IM_START, IM_END, PAD],
    )
    tok.chat_template = CHATML_TEMPLATE
    tok.padding_side = "left"
    return tok


def tiny_config(
    family: str, tok: PreTrainedTokenizerFast, *, hidden: int = 64, layers: int = 2
) -> PretrainedConfig:
    """A small config of the given family; GQA where the family has it, so masks see kv heads."""
    special = dict(
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id
    )
    common = dict(
        **special,
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        # Untied: a random tied model echoes its last input token, so its "answers" are empty.
        tie_word_embeddings=False,
        # SFT keeps the head at base; with the usual 0.02 init its logits stay too flat to reach
        # a low loss, which leaves the LCDD loss budget nothing to measure.
        initializer_range=0.1,
    )
    if family == "llama":
        return LlamaConfig(**common)
    if family == "mistral":
        return MistralConfig(**common, sliding_window=None)
    if family == "qwen2":
        return Qwen2Config(**common)
    if family == "qwen3":
        return Qwen3Config(**common, head_dim=hidden // 4)
    if family == "gpt2":
        return GPT2Config(
            **special,
            vocab_size=len(tok),
            n_embd=hidden,
            n_layer=layers,
            n_head=4,
            n_positions=512,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            tie_word_embeddings=False,
            initializer_range=0.1,
        )
    raise ValueError(f"unknown model family {family!r}; choose one of {', '.join(FAMILIES)}")


def tiny_model(
    family: str = "llama", *, hidden: int = 64, layers: int = 2, seed: int = 0
) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """A randomly initialized model of `family` and its byte-level tokenizer, fp32, eval mode."""
    tok = byte_tokenizer()
    config = tiny_config(family, tok, hidden=hidden, layers=layers)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    return model.eval(), tok


def write_tiny_model(family: str, out: Path, *, hidden: int = 64, layers: int = 2, seed: int = 0):
    model, tok = tiny_model(family, hidden=hidden, layers=layers, seed=seed)
    save_model_dir(model, tok, out)
