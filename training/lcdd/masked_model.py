"""Route each projection's weight delta through channel masks (docs/method.md, "Carriers").

W = M ⊙ W_ft + (1 − M) ⊙ W_base with M = m_row m_colᵀ. For a 0/1 mask this is exactly W_base
(all off) or exactly W_ft (all on); the gradient w.r.t. M is W_ft − W_base as in the paper's
W_base + M ⊙ (W_ft − W_base), which would round the "all on" case.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from training.lcdd.masks import MaskSet
from training.models.roles import LayerRoles, Projection, find_roles


class _MaskedWeight(nn.Module):
    def __init__(self, base: torch.Tensor, mask_fn, out_dim_first: bool):
        super().__init__()
        self.register_buffer("base", base.detach().clone())
        # A plain callable, not a submodule: the MaskSet must not be registered once per weight.
        self._mask_fn = mask_fn
        self._out_dim_first = out_dim_first

    def forward(self, w_ft: torch.Tensor) -> torch.Tensor:
        rows, cols = self._mask_fn()
        m = torch.outer(rows, cols) if self._out_dim_first else torch.outer(cols, rows)
        m = m.to(w_ft.dtype)
        return m * w_ft + (1 - m) * self.base


class _MaskedBias(nn.Module):
    def __init__(self, base: torch.Tensor, mask_fn):
        super().__init__()
        self.register_buffer("base", base.detach().clone())
        self._mask_fn = mask_fn

    def forward(self, b_ft: torch.Tensor) -> torch.Tensor:
        rows = self._mask_fn()[0].to(b_ft.dtype)
        return rows * b_ft + (1 - rows) * self.base


@dataclass
class MaskedModel:
    """A causal LM whose projection deltas (fine-tuned − base) pass through a MaskSet."""

    model: nn.Module
    roles: list[LayerRoles]
    masks: MaskSet

    def projections(self):
        for layer, roles in enumerate(self.roles):
            for proj in roles.projections:
                yield layer, proj

    def weight_params(self) -> list[nn.Parameter]:
        """The trainable fine-tuned weights W_ft (and biases) of every masked projection."""
        out = []
        for _, proj in self.projections():
            for name in ("weight", "bias"):
                if parametrize.is_parametrized(proj.module, name):
                    out.append(getattr(proj.module.parametrizations, name).original)
        return out

    @torch.no_grad()
    def sparse_delta(self) -> dict[str, torch.Tensor]:
        """The masked part of W_ft − W_base per projection, in (out, in) layout, fp32.

        Keys: `{proj}.rows`, `{proj}.cols` (active indices), `{proj}.weight` (rows x cols),
        `{proj}.bias` (rows) where the projection has a bias.
        """
        tensors = {}
        for layer, proj in self.projections():
            rows = torch.nonzero(self.masks.mask(layer, proj.rows) > 0).flatten()
            cols = torch.nonzero(self.masks.mask(layer, proj.cols) > 0).flatten()
            pw = proj.module.parametrizations.weight
            delta = (pw.original - pw[0].base).float()
            if not proj.out_dim_first:
                delta = delta.T
            tensors[f"{proj.name}.rows"] = rows.cpu()
            tensors[f"{proj.name}.cols"] = cols.cpu()
            tensors[f"{proj.name}.weight"] = delta[rows][:, cols].contiguous().cpu()
            if parametrize.is_parametrized(proj.module, "bias"):
                pb = proj.module.parametrizations.bias
                tensors[f"{proj.name}.bias"] = (pb.original - pb[0].base).float()[rows].cpu()
        return tensors

    @torch.no_grad()
    def merge(self) -> nn.Module:
        """Bake the current hard masks into plain weights and return the unwrapped model."""
        for _, proj in self.projections():
            for name in ("weight", "bias"):
                if parametrize.is_parametrized(proj.module, name):
                    parametrize.remove_parametrizations(proj.module, name, leave_parametrized=True)
        for p in self.model.parameters():
            p.requires_grad_(False)
        return self.model


def _attach(proj: Projection, layer: int, masks: MaskSet, base_weight, base_bias) -> None:
    def mask_fn():
        return masks.mask(layer, proj.rows), masks.mask(layer, proj.cols)

    parametrize.register_parametrization(
        proj.module, "weight", _MaskedWeight(base_weight, mask_fn, proj.out_dim_first)
    )
    if base_bias is not None:
        parametrize.register_parametrization(proj.module, "bias", _MaskedBias(base_bias, mask_fn))


@torch.no_grad()
def delta_scores(roles: list[LayerRoles], fine_tuned: nn.Module, base: nn.Module) -> dict:
    """Per unit: the squared norm of the delta it gates, summed over the rows/cols it masks."""
    base_params, ft_params = dict(base.named_parameters()), dict(fine_tuned.named_parameters())
    scores = {}
    for layer, r in enumerate(roles):
        for group, size in r.group_sizes.items():
            scores[MaskSet.key(layer, group)] = torch.zeros(size)
        for proj in r.projections:
            name = f"{proj.name}.weight"
            delta = (ft_params[name] - base_params[name].to(ft_params[name].device)).float().cpu()
            sq = delta.pow(2) if proj.out_dim_first else delta.pow(2).T
            for slices, per_unit in ((proj.rows, sq.sum(1)), (proj.cols, sq.sum(0))):
                start = 0
                for s in slices:
                    size = r.group_sizes[s.group] if s.index is None else len(s.index)
                    part = per_unit[start : start + size]
                    index = torch.arange(size) if s.index is None else s.index
                    scores[MaskSet.key(layer, s.group)].index_add_(0, index, part)
                    start += size
    return scores


def attach_masks(
    fine_tuned: nn.Module,
    base: nn.Module,
    *,
    init_mean: float = 1.5,
    init_std: float = 0.5,
    init_from_delta: bool = False,
) -> MaskedModel:
    """Wrap `fine_tuned` (W_ft, trained further) with masks over its delta from `base`.

    Only masked projections stay trainable: norms, embeddings and the LM head are frozen, and
    they must equal the base model's (checked), so that the whole behavior lives in the carrier.
    """
    roles = find_roles(fine_tuned)
    base_params = dict(base.named_parameters())
    ft_params = dict(fine_tuned.named_parameters())
    projected = {f"{p.name}.{n}" for r in roles for p in r.projections for n in ("weight", "bias")}
    for name, param in ft_params.items():
        if name not in base_params or base_params[name].shape != param.shape:
            raise ValueError(f"carrier/base mismatch: parameter {name} differs in name or shape")
        if name not in projected and not torch.equal(base_params[name].to(param.device), param):
            raise ValueError(
                f"carrier/base mismatch: {name} is not a masked projection but differs from the "
                "base; the SFT model must keep norms, embeddings and head at base"
            )
    masks = MaskSet(roles, init_mean=init_mean, init_std=init_std).to(
        next(fine_tuned.parameters()).device
    )
    if init_from_delta:
        masks.init_from_scores(delta_scores(roles, fine_tuned, base), init_mean, init_std)
    for p in fine_tuned.parameters():
        p.requires_grad_(False)
    for layer, r in enumerate(roles):
        for proj in r.projections:
            bias = base_params.get(f"{proj.name}.bias")
            _attach(proj, layer, masks, base_params[f"{proj.name}.weight"], bias)
    masked = MaskedModel(fine_tuned, roles, masks)
    for p in masked.weight_params():
        p.requires_grad_(True)
    return masked
