"""The SFT-Eraser objective (DESIGN.md section 4) on a frozen model with a trainable soft prompt.

loss = mean_l MSE(mean_batch h_l([P; x])[C_l], mean_D h_l^target(x)[C_l])   (match="batch_mean")
     | mean_l MSE(h_l([P; x])[C_l], h_l^target(x)[C_l]) per prompt          (match="per_prompt")
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

    states: list[torch.Tensor]  # per layer: h_l at the last token of every prompt (prompts, d)
    log_probs: torch.Tensor  # (prompts, k, vocab): target log-probs at the last k positions


@torch.no_grad()
def target_stats(target, batches, k: int) -> TargetStats:
    per_batch, log_probs = [], []
    for input_ids, attention_mask in batches:
        logits, states = forward(target, input_ids, attention_mask)
        log_probs.append(F.log_softmax(logits[:, -k:].float(), -1).cpu())
        per_batch.append([s.float().cpu() for s in states])
    states = [torch.cat(layer) for layer in zip(*per_batch, strict=True)]
    return TargetStats(states, torch.cat(log_probs))


@dataclass
class EraserLoss:
    channels: list[torch.Tensor]  # per layer: residual coordinates to match (may be empty)
    kl_weight: float
    norm_weight: float
    match_activations: bool  # False: the KL-only ablation
    per_prompt: bool  # match each prompt's states, not the batch mean against the data mean

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
                self._mse(h[:, c.to(device)].float(), target[:, c].to(device), rows)
                for h, target, c in zip(states, stats.states, self.channels, strict=True)
                if c.numel()
            ]
            act = torch.stack(terms).mean()
        norm = prefix.pow(2).sum(-1).mean()
        total = act + self.kl_weight * kl + self.norm_weight * norm
        return {"loss": total, "act": act.detach(), "kl": kl.detach(), "norm": norm.detach()}

    def _mse(self, states: torch.Tensor, target: torch.Tensor, rows) -> torch.Tensor:
        if self.per_prompt:
            return F.mse_loss(states, target[rows])
        return F.mse_loss(states.mean(0), target.mean(0))
