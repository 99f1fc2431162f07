"""Channel masks: one logit per unit, a hard 0/1 step forward, a sigmoid gradient backward."""

from __future__ import annotations

import torch
from torch import nn

from training.models.roles import MASK_GROUPS, LayerRoles, MaskSlice


def straight_through(theta: torch.Tensor) -> torch.Tensor:
    """m = H(θ) + (σ(θ) − sg(σ(θ))): exactly 0/1 forward, gradient σ'(θ) backward.

    Written as H + (σ − σ) rather than H − σ + σ so the forward value is exactly H (no rounding),
    which keeps "all masks off" bit-identical to the base model.
    """
    soft = torch.sigmoid(theta)
    return (theta > 0).to(theta.dtype) + (soft - soft.detach())


class MaskSet(nn.Module):
    """Mask logits θ for every (layer, group); the carrier is every unit with θ > 0."""

    def __init__(self, roles: list[LayerRoles], *, init_mean: float = 1.5, init_std: float = 0.5):
        super().__init__()
        self.num_layers = len(roles)
        self.group_sizes = [dict(r.group_sizes) for r in roles]
        self.theta = nn.ParameterDict()
        for layer, sizes in enumerate(self.group_sizes):
            for group in MASK_GROUPS:
                init = torch.randn(sizes[group]) * init_std + init_mean
                self.theta[self.key(layer, group)] = nn.Parameter(init)

    @staticmethod
    def key(layer: int, group: str) -> str:
        return f"{layer}_{group}"

    def mask(self, layer: int, slices: tuple[MaskSlice, ...]) -> torch.Tensor:
        parts = []
        for s in slices:
            m = straight_through(self.theta[self.key(layer, s.group)])
            parts.append(m if s.index is None else m[s.index.to(m.device)])
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    @torch.no_grad()
    def init_from_scores(self, scores: dict[str, torch.Tensor], mean: float, std: float) -> None:
        """θ = mean + std·z, z the per-group standardized log score of each unit.

        The ranking of θ then starts from how much each unit's delta carries instead of from
        init noise (the loss gradient reaching θ through a small SFT delta is ~1e-6 per step on
        SmolLM2, far too weak to reorder N(1.5, 0.5) logits in a few hundred steps).
        """
        for key, p in self.theta.items():
            log_s = scores[key].to(p.device).clamp(min=1e-30).log()
            z = (log_s - log_s.mean()) / log_s.std().clamp(min=1e-12)
            p.copy_(mean + std * z)

    @torch.no_grad()
    def fill(self, value: float) -> None:
        """Set every logit (tests: +v = all on, −v = all off)."""
        for p in self.theta.values():
            p.fill_(value)

    def all_logits(self) -> torch.Tensor:
        return torch.cat([p.reshape(-1) for p in self.theta.values()])

    def soft_count(self) -> torch.Tensor:
        """Σ σ(θ): the differentiable count of active units that LCDD's penalty minimizes."""
        return sum(torch.sigmoid(p).sum() for p in self.theta.values())

    @property
    def num_units(self) -> int:
        return sum(p.numel() for p in self.theta.values())

    @torch.no_grad()
    def density(self) -> float:
        return sum(int((p > 0).sum()) for p in self.theta.values()) / self.num_units

    @torch.no_grad()
    def group_density(self) -> dict[str, float]:
        out = {}
        for group in MASK_GROUPS:
            ps = [self.theta[self.key(layer, group)] for layer in range(self.num_layers)]
            out[group] = sum(int((p > 0).sum()) for p in ps) / sum(p.numel() for p in ps)
        return out

    @torch.no_grad()
    def active_indices(self) -> list[dict[str, list[int]]]:
        """Per layer, per group: the sorted indices of the active units."""
        return [
            {
                group: torch.nonzero(self.theta[self.key(layer, group)] > 0).flatten().tolist()
                for group in MASK_GROUPS
            }
            for layer in range(self.num_layers)
        ]

    @torch.no_grad()
    def keep_top(self, fraction: float, margin: float = 1e-2) -> None:
        """Project θ so that exactly the top `fraction` of all units are on.

        Kept units get θ ≥ margin, the rest θ ≤ −margin: just across zero, so the loss gradient
        can still bring a unit back later.
        """
        logits = self.all_logits()
        keep = max(1, round(fraction * logits.numel()))
        if keep >= logits.numel():
            threshold = logits.min() - 1
        else:
            threshold = torch.topk(logits, keep, sorted=True).values[-1]
        # Ties at the threshold can keep a few extra units: harmless, and counted in `density`.
        for p in self.theta.values():
            on = p >= threshold
            p.copy_(torch.where(on, p.clamp(min=margin), p.clamp(max=-margin)))
