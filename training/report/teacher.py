"""Teacher-forced scores on prompt+reply rows: mean NLL (perplexity) and mean KL per reply token.

A row is laid out as the erasers see it everywhere else, `[pad][prefix][prompt + reply]`, with
positions counted from the first real slot; only positions that predict a reply token (the
reply and its end-of-turn token, as in SFT) are scored.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from eraser_store.prompting import positions
from training.batches import IGNORE, Encoded, encode
from training.data.generation import left_pad, prompt_inputs
from training.data.schema import DataError, Example

NO_TRUNCATION = 1 << 30


def encode_rows(tokenizer, examples: list[Example]) -> list[Encoded]:
    return [encode(tokenizer, e, NO_TRUNCATION) for e in examples]


def _batch(rows: list[Encoded], pad_id: int):
    ids, mask = left_pad([r.input_ids for r in rows], pad_id)
    reply, _ = left_pad([[int(label != IGNORE) for label in r.labels] for r in rows], 0)
    return ids, mask, reply.bool()


@torch.no_grad()
def reply_log_probs(model, prefix, ids, mask, reply) -> tuple[torch.Tensor, torch.Tensor]:
    """(reply tokens, vocab) fp32 log-probs at the positions predicting them, and the tokens."""
    inputs = prompt_inputs(model, ids, mask, prefix)
    logits = model(
        **inputs, position_ids=positions(inputs["attention_mask"]), use_cache=False
    ).logits
    logits = logits[:, -ids.shape[1] :]  # the prefix sits before the tokens: drop its slots
    picked = reply[:, 1:].to(logits.device)
    log_probs = F.log_softmax(logits[:, :-1][picked].float(), -1)
    return log_probs, ids[:, 1:].to(logits.device)[picked]


def score_rows(
    sources: dict,
    rows: list[Encoded],
    pad_id: int,
    batch_size: int,
    kl_pairs: dict[str, tuple[str, str]] | None = None,
    desc: str = "score",
) -> dict:
    """`sources`: name -> (model, prefix or None). `kl_pairs`: key -> (p, q) source names.

    Returns per source the mean NLL and perplexity over reply tokens, per pair the mean
    KL(p‖q) per reply token, and the token count.
    """
    kl_pairs = kl_pairs or {}
    full = {name for pair in kl_pairs.values() for name in pair}
    nll = dict.fromkeys(sources, 0.0)
    kl = dict.fromkeys(kl_pairs, 0.0)
    tokens = 0
    order = sorted(range(len(rows)), key=lambda i: len(rows[i].input_ids), reverse=True)
    for start in tqdm(range(0, len(order), batch_size), desc=desc):
        ids, mask, reply = _batch([rows[i] for i in order[start : start + batch_size]], pad_id)
        tokens += int(reply[:, 1:].sum())
        kept = {}
        for name, (model, prefix) in sources.items():
            log_probs, targets = reply_log_probs(model, prefix, ids, mask, reply)
            nll[name] -= log_probs.gather(1, targets[:, None]).sum().item()
            if name in full:
                kept[name] = log_probs
        for key, (p, q) in kl_pairs.items():
            lp, lq = kept[p], kept[q].to(kept[p].device)
            kl[key] += (lp.exp() * (lp - lq)).sum().item()
    if not tokens:
        raise DataError(f"{desc}: no reply tokens to score")
    mean_nll = {name: total / tokens for name, total in nll.items()}
    return {
        "nll": mean_nll,
        "perplexity": {name: math.exp(min(v, 700.0)) for name, v in mean_nll.items()},
        "kl": {key: total / tokens for key, total in kl.items()},
        "tokens": tokens,
    }
