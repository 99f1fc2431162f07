"""The SFT-Eraser objective (DESIGN.md section 4) on a frozen model with a trainable soft prompt.

loss = mean_l MSE(mean_batch h_l([P; x])[C_l], mean_D h_l^target(x)[C_l])
     + w_KL · mean over the last k prompt positions of KL(p_target(·|x) ‖ p(·|[P; x]))
     + w_2 · mean_j ‖P_j‖²
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from training.data.generation import prompt_inputs
from training.models.roles import decoder_layers


@contextmanager
def last_token_states(model):
    """Collect every decoder layer's output (residual stream) at the last position."""
    _, layers = decoder_layers(model)
    states: list[torch.Tensor | None] = [None] * len(layers)

    def hook(i):
        def fn(_module, _inputs, output):
            hidden = output[0] if isinstance(output, tuple) else output
            states[i] = hidden[:, -1, :]

        return fn

    handles = [layer.register_forward_hook(hook(i)) for i, layer in enumerate(layers)]
    try:
        yield states
    finally:
        for h in handles:
            h.remove()


def forward(model, input_ids, attention_mask, prefix=None):
    """Logits and per-layer last-token states for left-padded prompts (prefix after the padding)."""
    inputs = prompt_inputs(model, input_ids, attention_mask, prefix)
    mask = inputs["attention_mask"]
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    with last_token_states(model) as states:
        logits = model(**inputs, position_ids=position_ids).logits
    return logits, list(states)


@dataclass
class TargetStats:
    """What the eraser is matched against, computed once from the target model."""

    means: list[torch.Tensor]  # per layer: mean over all prompts of h_l at the last token (d,)
    log_probs: torch.Tensor  # (prompts, k, vocab): target log-probs at the last k positions


@torch.no_grad()
def target_stats(target, batches, k: int) -> TargetStats:
    sums, count, log_probs = None, 0, []
    for input_ids, attention_mask in batches:
        logits, states = forward(target, input_ids, attention_mask)
        log_probs.append(F.log_softmax(logits[:, -k:].float(), -1).cpu())
        batch_sums = [s.float().sum(0) for s in states]
        sums = (
            batch_sums if sums is None else [a + b for a, b in zip(sums, batch_sums, strict=True)]
        )
        count += input_ids.shape[0]
    return TargetStats([s / count for s in sums], torch.cat(log_probs))


@dataclass
class EraserLoss:
    channels: list[torch.Tensor]  # per layer: residual coordinates to match (may be empty)
    kl_weight: float
    norm_weight: float
    match_activations: bool  # False: the KL-only ablation

    def __call__(self, model, prefix, input_ids, attention_mask, stats: TargetStats, rows) -> dict:
        logits, states = forward(model, input_ids, attention_mask, prefix)
        k = stats.log_probs.shape[1]
        device = logits.device
        target_lp = stats.log_probs[rows].to(device)
        log_p = F.log_softmax(logits[:, -k:].float(), -1)
        kl = (target_lp.exp() * (target_lp - log_p)).sum(-1).mean()
        act = torch.zeros((), device=device)
        if self.match_activations:
            terms = [
                F.mse_loss(h[:, c.to(device)].float().mean(0), mean[c].to(device))
                for h, mean, c in zip(states, stats.means, self.channels, strict=True)
                if c.numel()
            ]
            act = torch.stack(terms).mean()
        norm = prefix.pow(2).sum(-1).mean()
        total = act + self.kl_weight * kl + self.norm_weight * norm
        return {"loss": total, "act": act.detach(), "kl": kl.detach(), "norm": norm.detach()}
