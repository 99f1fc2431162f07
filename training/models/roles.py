"""Find each decoder layer's projections and the channel-mask groups that route their weight delta.

Masks follow docs/method.md ("Carriers"): 8 groups per layer. Each projection's delta is gated by
a row mask (output units) and a column mask (input units), both given as gathers from the groups.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

MASK_GROUPS = ("ffn_read", "ffn_hidden", "ffn_write", "attn_read", "q", "k", "v", "attn_write")
# Groups whose units are residual-stream coordinates: the eraser's channels (union per layer).
WRITE_GROUPS = ("ffn_write", "attn_write")


class UnsupportedArchitecture(ValueError):
    pass


@dataclass(frozen=True)
class MaskSlice:
    """Units of `group` gathered at `index` (None: the whole group in order)."""

    group: str
    index: torch.Tensor | None = None


@dataclass(frozen=True)
class Projection:
    """One projection weight whose delta is masked.

    `rows`/`cols` are the output/input masks, each a concatenation of group slices (GPT-2's fused
    qkv has three row slices). `out_dim_first` is True for nn.Linear (weight is out x in), False
    for GPT-2's Conv1D (in x out).
    """

    name: str
    module: nn.Module
    rows: tuple[MaskSlice, ...]
    cols: tuple[MaskSlice, ...]
    out_dim_first: bool


@dataclass(frozen=True)
class LayerRoles:
    group_sizes: dict[str, int]
    projections: tuple[Projection, ...]


def _gqa_expand(num_heads: int, num_kv_heads: int, head_dim: int) -> torch.Tensor:
    """Index into the v mask for each input column of o_proj: query head h reads kv head h // g."""
    group = num_heads // num_kv_heads
    heads = torch.arange(num_heads).repeat_interleave(head_dim) // group
    return heads * head_dim + torch.arange(head_dim).repeat(num_heads)


def _llama_layer(layer: nn.Module, prefix: str, config) -> LayerRoles:
    attn, mlp = layer.self_attn, layer.mlp
    q, k, v, o = attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj
    num_heads = config.num_attention_heads
    num_kv = getattr(config, "num_key_value_heads", None) or num_heads
    head_dim = q.out_features // num_heads
    d_model, d_ff = q.in_features, mlp.up_proj.out_features
    sizes = dict(
        ffn_read=d_model,
        ffn_hidden=d_ff,
        ffn_write=d_model,
        attn_read=d_model,
        q=q.out_features,
        k=k.out_features,
        v=v.out_features,
        attn_write=d_model,
    )
    v_cols = _gqa_expand(num_heads, num_kv, head_dim)

    def proj(name, module, row, col, col_index=None):
        return Projection(
            f"{prefix}.{name}", module, (MaskSlice(row),), (MaskSlice(col, col_index),), True
        )

    projections = (
        proj("self_attn.q_proj", q, "q", "attn_read"),
        proj("self_attn.k_proj", k, "k", "attn_read"),
        proj("self_attn.v_proj", v, "v", "attn_read"),
        proj("self_attn.o_proj", o, "attn_write", "v", v_cols),
        proj("mlp.gate_proj", mlp.gate_proj, "ffn_hidden", "ffn_read"),
        proj("mlp.up_proj", mlp.up_proj, "ffn_hidden", "ffn_read"),
        proj("mlp.down_proj", mlp.down_proj, "ffn_write", "ffn_hidden"),
    )
    return LayerRoles(sizes, projections)


def _gpt2_layer(layer: nn.Module, prefix: str, config) -> LayerRoles:
    attn, mlp = layer.attn, layer.mlp
    d_model = config.n_embd
    d_ff = mlp.c_fc.weight.shape[1]
    sizes = dict(
        ffn_read=d_model,
        ffn_hidden=d_ff,
        ffn_write=d_model,
        attn_read=d_model,
        q=d_model,
        k=d_model,
        v=d_model,
        attn_write=d_model,
    )

    def proj(name, module, rows, col):
        return Projection(f"{prefix}.{name}", module, rows, (MaskSlice(col),), False)

    qkv = (MaskSlice("q"), MaskSlice("k"), MaskSlice("v"))
    projections = (
        proj("attn.c_attn", attn.c_attn, qkv, "attn_read"),
        # GPT-2 has no GQA: o's input columns are the v units one to one.
        proj("attn.c_proj", attn.c_proj, (MaskSlice("attn_write"),), "v"),
        proj("mlp.c_fc", mlp.c_fc, (MaskSlice("ffn_hidden"),), "ffn_read"),
        proj("mlp.c_proj", mlp.c_proj, (MaskSlice("ffn_write"),), "ffn_hidden"),
    )
    return LayerRoles(sizes, projections)


def _is_llama_style(layer: nn.Module) -> bool:
    attn, mlp = getattr(layer, "self_attn", None), getattr(layer, "mlp", None)
    return (
        attn is not None
        and mlp is not None
        and all(
            isinstance(getattr(attn, n, None), nn.Linear)
            for n in ("q_proj", "k_proj", "v_proj", "o_proj")
        )
        and all(
            isinstance(getattr(mlp, n, None), nn.Linear)
            for n in ("gate_proj", "up_proj", "down_proj")
        )
    )


def _is_gpt2_style(layer: nn.Module) -> bool:
    attn, mlp = getattr(layer, "attn", None), getattr(layer, "mlp", None)
    return all(hasattr(attn, n) for n in ("c_attn", "c_proj")) and all(
        hasattr(mlp, n) for n in ("c_fc", "c_proj")
    )


def decoder_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The decoder layer list and its dotted prefix (`model.layers` or `transformer.h`)."""
    for prefix in ("model.layers", "transformer.h"):
        owner = model
        for part in prefix.split("."):
            owner = getattr(owner, part, None)
        if isinstance(owner, nn.ModuleList) and len(owner) > 0:
            return prefix, owner
    raise UnsupportedArchitecture(_unsupported_message(model, "no decoder layer list found"))


def _unsupported_message(model: nn.Module, why: str) -> str:
    arch = type(model).__name__
    model_type = getattr(getattr(model, "config", None), "model_type", "?")
    return (
        f"unsupported architecture {arch} (model_type={model_type!r}): {why}; supported: "
        "Llama-style (q/k/v/o_proj + gate/up/down_proj: Llama, Qwen2/3, Mistral) and GPT-2"
    )


def find_roles(model: nn.Module) -> list[LayerRoles]:
    """Module roles for every decoder layer, found from the model's structure."""
    prefix, layers = decoder_layers(model)
    roles = []
    for i, layer in enumerate(layers):
        if _is_llama_style(layer):
            roles.append(_llama_layer(layer, f"{prefix}.{i}", model.config))
        elif _is_gpt2_style(layer):
            roles.append(_gpt2_layer(layer, f"{prefix}.{i}", model.config))
        else:
            raise UnsupportedArchitecture(
                _unsupported_message(
                    model, f"layer {i} ({type(layer).__name__}) has unknown projections"
                )
            )
    return roles
