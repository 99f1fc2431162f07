"""The SFT-Eraser objective (docs/method.md, "Erasers") on a frozen model, a trainable soft prompt.

loss = mean_l MSE(mean_batch h_l([P; x])[C_l], mean_D h_l^target(x)[C_l])   (match="batch_mean")
     | mean_l MSE(h_l([P; x])[C_l], h_l^target(x)[C_l]) per prompt          (match="per_prompt")
     + mean_l MSE(h_l([P; x])[H_l], h_l^target(x)[H_l]) per prompt     (hold_others: H_l = the
                                        other behaviors' channels, kept where the target has them)
     + w_KL · mean over the KL positions of KL(p_target(·|x) ‖ p(·|[P; x]))
     + w_2 · mean_j ‖P_j‖²

h_l is taken at the last prompt token. The KL positions are the last k prompt positions (paper,
kl_on="prompt") or, with kl_on="reply", the positions that predict the target model's own greedy
reply, teacher-forced after the prompt (the rows are then prompt + reply, padded to one length).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from training.data.generation import greedy_reply_ids, prompt_inputs
from training.models.roles import decoder_layers


@contextmanager
def token_states(model, index: int, first_call_only: bool = False):
    """Collect every decoder layer's output (residual stream) at position `index`.
    `first_call_only`: keep a layer's first output until its slot is set back to None (in a
    generate() call, the prefill's rather than the last decoding step's)."""
    _, layers = decoder_layers(model)
    states: list[torch.Tensor | None] = [None] * len(layers)

    def hook(i):
        def fn(_module, _inputs, output):
            if first_call_only and states[i] is not None:
                return
            hidden = output[0] if isinstance(output, tuple) else output
            # A kept slice is copied: a view would hold the whole prefill's hidden states.
            states[i] = hidden[:, index, :].clone() if first_call_only else hidden[:, index, :]

        return fn

    handles = [layer.register_forward_hook(hook(i)) for i, layer in enumerate(layers)]
    try:
        yield states
    finally:
        for h in handles:
            h.remove()


def forward(model, input_ids, attention_mask, prefix=None, state_index=-1, logits_to_keep=0):
    """Logits (of the last `logits_to_keep` positions; 0: all) and per-layer states at
    `state_index` for left-padded rows (prefix after padding)."""
    inputs = prompt_inputs(model, input_ids, attention_mask, prefix)
    mask = inputs["attention_mask"]
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    with token_states(model, state_index) as states:
        out = model(**inputs, position_ids=position_ids, logits_to_keep=logits_to_keep)
    return out.logits, list(states)


@dataclass
class TargetStats:
    """What the eraser is matched against, computed once from the target model."""

    states: list[torch.Tensor]  # per layer: h_l at the last prompt token of every row (rows, d)
    log_probs: torch.Tensor  # (rows, k, vocab): target log-probs at the k KL positions
    kl_mask: torch.Tensor  # (rows, k): 1 where a KL position counts (reply padding does not)
    reply_len: int  # tokens after each prompt: 0, or the padded length of the target's replies

    @property
    def state_index(self) -> int:
        return -(self.reply_len + 1)

    @property
    def logits_to_keep(self) -> int:
        """The last positions whose logits the KL term reads: the vocabulary projection of the
        others (the prefix, most of the prompt) is skipped."""
        return self.kl_mask.shape[1] + (1 if self.reply_len else 0)

    def kl_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """The logits at the KL positions: the last k, or those that predict the reply tokens."""
        stop = logits.shape[1] - (1 if self.reply_len else 0)
        return logits[:, stop - self.kl_mask.shape[1] : stop]


@torch.no_grad()
def target_stats(target, batches, kl_mask: torch.Tensor, reply_len: int) -> TargetStats:
    stats = TargetStats([], torch.empty(0), kl_mask, reply_len)
    per_batch, log_probs = [], []
    for input_ids, attention_mask in batches:
        logits, states = forward(
            target, input_ids, attention_mask, None, stats.state_index, stats.logits_to_keep
        )
        log_probs.append(F.log_softmax(stats.kl_logits(logits).float(), -1).cpu())
        per_batch.append([s.float().cpu() for s in states])
    stats.states = [torch.cat(layer) for layer in zip(*per_batch, strict=True)]
    stats.log_probs = torch.cat(log_probs)
    return stats


@torch.no_grad()
def generated_target_stats(
    target, tokenizer, encoded: list[list[int]], reply_tokens: int, batch_size: int = 16
) -> tuple[list[list[int]], TargetStats]:
    """Rows (each prompt + the target's greedy reply, padded to `reply_tokens`) and the target's
    statistics on them, from the generation itself: the states at the last prompt token are the
    prefill's and the KL log-probs those of each generated token, the values `target_stats` gets
    from a second, teacher-forced pass over the rows."""
    if getattr(target.generation_config, "prefill_chunk_size", None):
        # The states are read from the first forward call, which must see the whole prompt.
        raise ValueError("the target's generation_config sets prefill_chunk_size; unset it")
    n = len(encoded)
    kl_mask = torch.zeros(n, reply_tokens)
    log_probs: torch.Tensor | None = None
    per_layer: list[torch.Tensor] = []
    with token_states(target, -1, first_call_only=True) as prefill:

        def keep(rows: list[int], logits: torch.Tensor) -> None:
            nonlocal log_probs
            if log_probs is None:
                vocab = logits.shape[-1]
                log_probs = torch.full((n, reply_tokens, vocab), -math.log(vocab))
                per_layer.extend(torch.zeros(n, s.shape[-1]) for s in prefill)
            # generate() stops once every row of the batch has ended: positions past a row's end
            # keep the uniform distribution (a finite KL times 0) and are never counted (kl_mask).
            log_probs[rows, : logits.shape[1]] = F.log_softmax(logits.float(), -1).cpu()
            for layer, state in zip(per_layer, prefill, strict=True):
                layer[rows] = state.float().cpu()
            prefill[:] = [None] * len(prefill)

        replies = greedy_reply_ids(
            target, tokenizer, encoded, reply_tokens, batch_size, progress=True, on_batch=keep
        )
    pad = [tokenizer.pad_token_id]
    rows = [e + r + pad * (reply_tokens - len(r)) for e, r in zip(encoded, replies, strict=True)]
    for i, reply in enumerate(replies):
        kl_mask[i, : len(reply)] = 1.0
    assert log_probs is not None, "no prompts"
    return rows, TargetStats(per_layer, log_probs, kl_mask, reply_tokens)


@dataclass
class EraserLoss:
    channels: list[torch.Tensor]  # per layer: residual coordinates to match (may be empty)
    kl_weight: float
    norm_weight: float
    match_activations: bool  # False: the KL-only ablation
    per_prompt: bool  # match each prompt's states, not the batch mean against the data mean
    held: list[torch.Tensor] | None = None  # per layer: channels held per prompt (hold_others)

    def __call__(
        self, model, prefix, input_ids, attention_mask, stats: TargetStats, rows, trained=None
    ) -> dict:
        """`trained`: the rows of `prefix` under optimization, whose norm is penalized (default:
        all of it; a stacked partner eraser's rows are not)."""
        logits, states = forward(
            model, input_ids, attention_mask, prefix, stats.state_index, stats.logits_to_keep
        )
        device = logits.device
        target_lp = stats.log_probs[rows].to(device)
        log_p = F.log_softmax(stats.kl_logits(logits).float(), -1)
        counted = stats.kl_mask[rows].to(device)
        kl = ((target_lp.exp() * (target_lp - log_p)).sum(-1) * counted).sum() / counted.sum()
        act = hold = torch.zeros((), device=device)
        if self.match_activations:
            act = self._activation_term(states, stats, self.channels, rows, self.per_prompt)
        if self.held is not None:
            hold = self._activation_term(states, stats, self.held, rows, per_prompt=True)
        norm = (prefix if trained is None else trained).pow(2).sum(-1).mean()
        total = act + hold + self.kl_weight * kl + self.norm_weight * norm
        parts = {"loss": total, "act": act, "hold": hold, "kl": kl, "norm": norm}
        return {k: v if k == "loss" else v.detach() for k, v in parts.items()}

    @staticmethod
    def _activation_term(states, stats: TargetStats, channels, rows, per_prompt: bool):
        terms = [
            mse(h[:, c.to(h.device)].float(), target[:, c].to(h.device), rows, per_prompt)
            for h, target, c in zip(states, stats.states, channels, strict=True)
            if c.numel()
        ]
        return torch.stack(terms).mean() if terms else torch.zeros((), device=states[0].device)


def mse(states: torch.Tensor, target: torch.Tensor, rows, per_prompt: bool) -> torch.Tensor:
    """Per prompt: each row against the target's on that prompt; else batch mean vs data mean."""
    if per_prompt:
        return F.mse_loss(states, target[rows])
    return F.mse_loss(states.mean(0), target.mean(0))
