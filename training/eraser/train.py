"""Optimize an eraser (soft prompt) against a carrier behavior and write it as an eraser file."""

from __future__ import annotations

import dataclasses
import itertools
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from eraser_store import read_eraser, stack_key
from eraser_store.format import eraser_files
from eraser_store.prompting import chat_prompt_ids
from training.carrier import behavior_entry, behavior_names, load_without, read_manifest
from training.checkpoint_io import ModelDirError, atomic_dir, load_model_dir
from training.configs import EraserConfig
from training.data.generation import left_pad
from training.data.schema import RETAIN, load_jsonl, require_behavior
from training.eraser.objective import (
    EraserLoss,
    TargetStats,
    generated_target_stats,
    target_stats,
)
from training.loop import finish_work, run_loop, run_settings, work_dir_for
from training.plots import plot_curves
from training.sft import SFT_INFO


def pick_prompts(data: Path, behavior: str, limit: int, seed: int, others: tuple = ()) -> list:
    """Up to `limit` (group, messages) pairs, deduplicated, seeded: half the behavior's prompts,
    half retain. The retain half is shared equally between benign rows (group RETAIN) and the
    triggering rows of each behavior in `others` (the carrier's other behaviors, with
    --retain-others); a row's group is the behavior whose prompts it comes from."""
    examples = load_jsonl(data)
    triggering = unique_messages(require_behavior(examples, behavior, str(data)))
    groups = [RETAIN, *others]
    retain = [unique_messages(e for e in examples if e.behavior == g) for g in groups]
    shares = equal_shares([len(rows) for rows in retain], limit // 2)
    rng = random.Random(seed)
    picked = []
    for group, rows, share in (
        (behavior, triggering, limit - sum(shares)),
        *zip(groups, retain, shares, strict=True),
    ):
        rng.shuffle(rows)  # each group is a fresh list from unique_messages
        picked += [(group, m) for m in rows[:share]]
    return picked


def unique_messages(rows) -> list:
    seen, unique = set(), []
    for e in rows:
        key = tuple((m["role"], m["content"]) for m in e.messages)
        if key not in seen:
            seen.add(key)
            unique.append(e.messages)
    return unique


def equal_shares(sizes: list[int], total: int) -> list[int]:
    """Split `total` as equally as the group sizes allow (a small group's unused share goes to the
    others)."""
    shares = [0] * len(sizes)
    left = total
    for n, i in enumerate(sorted(range(len(sizes)), key=lambda i: sizes[i])):
        groups_left = len(sizes) - n
        shares[i] = min(sizes[i], left // groups_left + (left % groups_left > 0))
        left -= shares[i]
    return shares


def union_channels(per_behavior) -> list[list[int]]:
    """Per layer, the sorted union of several behaviors' channel lists."""
    return [sorted(set().union(*layer)) for layer in zip(*per_behavior, strict=True)]


def other_behaviors_channels(manifest: dict, behavior: str, matched) -> list[list[int]]:
    """Per layer, the other behaviors' channels that are not already matched."""
    others = [b["eraser_channels"] for b in manifest["behaviors"] if b["name"] != behavior]
    if not others:
        return [[] for _ in matched]
    return [sorted(set(u) - set(m)) for u, m in zip(union_channels(others), matched, strict=True)]


def random_channels_like(channels: list[list[int]], hidden: int, seed: int) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    return [sorted(torch.randperm(hidden, generator=gen)[: len(c)].tolist()) for c in channels]


@dataclass
class Placement:
    """Where the eraser sits in a step and what it is matched against there: alone against its
    target model, or stacked with a frozen partner eraser against the carrier without both, in
    the server's stacking order."""

    encoded: list[list[int]]  # per prompt: its tokens (+ this target's reply with --kl-on reply)
    stats: TargetStats
    loss_fn: EraserLoss
    partner: torch.Tensor | None = None  # the partner eraser's embeddings
    partner_first: bool = False  # the partner stacks in front of the trained eraser


def reference_stats(cfg: EraserConfig, references: list, encoded, tokenizer):
    """Rows (with the reference's reply under --kl-on reply) and statistics, each prompt against
    its own reference model; `references[i]` is prompt i's. Row order is kept."""
    reply_len = cfg.reply_tokens if cfg.kl_on == "reply" else 0
    kl_positions = min(cfg.kl_positions, min(len(e) for e in encoded))
    rows, parts = list(encoded), []
    for ref in {id(r): r for r in references}.values():
        index = [i for i, r in enumerate(references) if r is ref]
        subset = [encoded[i] for i in index]
        if reply_len:
            subset, stats = generated_target_stats(ref, tokenizer, subset, reply_len)
        else:
            batches = [
                left_pad(subset[i : i + cfg.batch_size], tokenizer.pad_token_id)
                for i in range(0, len(subset), cfg.batch_size)
            ]
            stats = target_stats(ref, batches, torch.ones(len(subset), kl_positions), 0)
        parts.append((index, stats))
        for i, row in zip(index, subset, strict=True):
            rows[i] = row
    if len(parts) == 1:
        return rows, parts[0][1]
    order = torch.tensor([i for index, _ in parts for i in index]).argsort()
    stats = [s for _, s in parts]
    merged = TargetStats(
        [torch.cat(layer)[order] for layer in zip(*(s.states for s in stats), strict=True)],
        torch.cat([s.log_probs for s in stats])[order],
        torch.cat([s.kl_mask for s in stats])[order],
        reply_len,
    )
    return rows, merged


def build_placement(
    cfg: EraserConfig, manifest, prompts, erased, channels, hidden, model, partner=None
):
    """The Placement that erases `erased` (this behavior, and the partner's when stacked): prompts
    (`prompts`: (group, token ids) pairs), the target model's statistics (the carrier without
    those behaviors; `model`'s own on the other behaviors' prompts with --others-reference
    carrier) and the loss."""
    target, tokenizer = load_without(cfg.carrier, *erased, device=cfg.device)
    if target.get_input_embeddings().weight.shape[1] != hidden:
        trained_on = cfg.sft_model or cfg.carrier
        raise ModelDirError(f"{trained_on} and {cfg.carrier} differ in hidden size")
    on_target = {RETAIN, *erased} if cfg.others_reference == "carrier" else None
    references = [target if on_target is None or g in on_target else model for g, _ in prompts]
    encoded, stats = reference_stats(cfg, references, [e for _, e in prompts], tokenizer)
    held = other_behaviors_channels(manifest, cfg.behavior, channels) if cfg.hold_others else None
    loss_fn = EraserLoss(
        channels=[torch.tensor(c, dtype=torch.long) for c in channels],
        kl_weight=cfg.kl_weight,
        norm_weight=cfg.norm_weight,
        match_activations=cfg.ablation != "kl_only",
        per_prompt=cfg.match == "per_prompt",
        held=None if held is None else [torch.tensor(c, dtype=torch.long) for c in held],
    )
    if partner is None:
        return Placement(encoded, stats, loss_fn)
    embeddings = partner.embeddings.to(target.device, torch.float32)
    # A partner is of another behavior, so the behaviors alone decide the side.
    partner_first = stack_key(partner.meta.behavior, "") < stack_key(cfg.behavior, "")
    return Placement(encoded, stats, loss_fn, embeddings, partner_first)


def carrier_eraser(flag: str, path: Path, fingerprint: str, hidden: int):
    """The eraser a flag names, checked: trained on this carrier, of its hidden size."""
    eraser = read_eraser(path)
    if eraser.meta.carrier_fingerprint != fingerprint:
        raise ModelDirError(f"{flag} {path} was trained on another carrier")
    if eraser.embeddings.shape[1] != hidden:
        raise ModelDirError(f"{flag} {path} has hidden size {eraser.embeddings.shape[1]}")
    return eraser


def stack_partner(path: Path, manifest, behavior: str, fingerprint: str, hidden: int):
    """A --stack-with eraser, checked: trained on this carrier, for another behavior of it."""
    partner = carrier_eraser("--stack-with", path, fingerprint, hidden)
    if partner.meta.behavior == behavior:
        raise ModelDirError(f"--stack-with {path} erases {behavior} itself")
    behavior_entry(manifest, partner.meta.behavior)
    return partner


def start_from(path: Path, cfg: EraserConfig, fingerprint: str, hidden: int) -> torch.Tensor:
    """An --init-from eraser's embeddings, checked: trained on this carrier, for this behavior,
    of --num-tokens rows."""
    eraser = carrier_eraser("--init-from", path, fingerprint, hidden)
    if eraser.meta.behavior != cfg.behavior:
        raise ModelDirError(f"--init-from {path} erases {eraser.meta.behavior}, not {cfg.behavior}")
    rows = eraser.embeddings.shape[0]
    if rows != cfg.num_tokens:
        raise ModelDirError(f"--init-from {path} has {rows} tokens; pass --num-tokens {rows}")
    return eraser.embeddings


def in_behavior_order(partners: list) -> list:
    """Stack partners sorted by behavior, so the partner drawn at a step does not depend on the
    order of --stack-with; one per behavior (a pair names each behavior once)."""
    partners = sorted(partners, key=lambda p: p.meta.behavior)
    for a, b in itertools.pairwise(partners):
        if a.meta.behavior == b.meta.behavior:
            raise ModelDirError(f"--stack-with names two erasers of {a.meta.behavior}")
    return partners


class EraserJob:
    def __init__(self, model, prefix, placements: list[Placement], pad_id, cfg: EraserConfig):
        self.model, self.placements, self.pad_id, self.cfg = model, placements, pad_id, cfg
        self.encoded = placements[0].encoded
        self.prefix = torch.nn.Parameter(prefix)
        self.opt = torch.optim.Adam([self.prefix], lr=cfg.lr)
        self.best = prefix.detach().clone()
        self.best_loss = float("inf")

    def rows(self, step: int) -> list[int]:
        gen = torch.Generator().manual_seed(self.cfg.seed * 100_003 + step)
        n = len(self.encoded)
        return torch.randperm(n, generator=gen)[: min(self.cfg.batch_size, n)].tolist()

    def placement(self, step: int) -> int:
        """The index into placements of a step, drawn from the step (resume-safe)."""
        rng = random.Random(f"stack:{self.cfg.seed}:{step}")
        if len(self.placements) == 1 or rng.random() >= self.cfg.stack_prob:
            return 0
        return rng.randrange(1, len(self.placements))

    def lr(self, step: int) -> float:
        """Constant, then (--lr-decay) falling linearly over the last `decay_steps`: lr /
        decay_steps at the last one, so every step still moves P."""
        decay_steps = round(self.cfg.lr_decay * self.cfg.steps)
        left = self.cfg.steps - step
        return self.cfg.lr * min(1.0, left / decay_steps) if decay_steps else self.cfg.lr

    def train_step(self, step: int, rows: list[int]) -> dict[str, float]:
        before = self.prefix.detach().clone()
        lr = self.lr(step)
        for group in self.opt.param_groups:
            group["lr"] = lr
        k = self.placement(step)
        place = self.placements[k]
        prefix = self.prefix
        if place.partner is not None:
            pair = (place.partner, prefix) if place.partner_first else (prefix, place.partner)
            prefix = torch.cat(pair)
        input_ids, mask = left_pad([place.encoded[i] for i in rows], self.pad_id)
        parts = place.loss_fn(
            self.model, prefix, input_ids, mask, place.stats, rows, trained=self.prefix
        )
        parts["loss"].backward()
        torch.nn.utils.clip_grad_norm_([self.prefix], self.cfg.grad_clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            norms = self.prefix.norm(dim=-1, keepdim=True).clamp(min=1e-12)
            self.prefix.mul_((self.cfg.max_norm / norms).clamp(max=1.0))
        loss = parts["loss"].item()
        # Keep the lowest-loss trigger (the paper's rule): the loss was measured before the step.
        # Only steps alone compete: a stacked step's loss is against another target.
        if k == 0 and loss < self.best_loss:
            self.best_loss, self.best = loss, before
        metrics = {name: v.item() for name, v in parts.items()}
        return {**metrics, "lr": lr, "stacked": k, "partner_first": int(place.partner_first)}

    def kept(self) -> str:
        """Which P result() gives: `best` (--keep best) or `last` (--keep last, or no step alone
        to measure a best on)."""
        return "best" if self.cfg.keep == "best" and self.best_loss < float("inf") else "last"

    def result(self) -> torch.Tensor:
        """The lowest-loss P among the steps alone, or the last P (see kept())."""
        return self.best if self.kept() == "best" else self.prefix.detach()

    def state_dict(self) -> dict:
        return {
            "prefix": self.prefix.detach().cpu(),
            "best": self.best.cpu(),
            "best_loss": self.best_loss,
            "opt": self.opt.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        device = self.prefix.device
        with torch.no_grad():
            self.prefix.copy_(state["prefix"].to(device))
        self.best = state["best"].to(device)
        self.best_loss = state["best_loss"]
        self.opt.load_state_dict(state["opt"])


def run_eraser(cfg: EraserConfig) -> Path:
    out = Path(cfg.out)
    if out.exists() and not cfg.overwrite:
        raise FileExistsError(f"{out} already exists (pass --overwrite to replace it)")
    manifest = read_manifest(cfg.carrier)
    if manifest is None:
        raise ModelDirError(f"{cfg.carrier} is not a carrier (no carrier.json)")
    entry = behavior_entry(manifest, cfg.behavior)
    others = sorted(set(behavior_names(manifest)) - {cfg.behavior}) if cfg.retain_others else []
    prompts = pick_prompts(cfg.data, cfg.behavior, cfg.max_prompts, cfg.seed, tuple(others))

    if cfg.sft_model is not None:
        model, tokenizer = load_model_dir(cfg.sft_model, device=cfg.device)
        fingerprint = json.loads((Path(cfg.sft_model) / SFT_INFO).read_text())["fingerprint"]
    else:
        model, tokenizer = load_model_dir(cfg.carrier, device=cfg.device)
        fingerprint = manifest["fingerprint"]
    model.requires_grad_(False)
    hidden = model.get_input_embeddings().weight.shape[1]

    channels = entry["eraser_channels"]
    if cfg.channel_set == "carrier":
        channels = union_channels(b["eraser_channels"] for b in manifest["behaviors"])
    if cfg.ablation == "random_channels":
        channels = random_channels_like(channels, hidden, cfg.seed)
    # Partners and the starting P are checked before any target model is built, so a wrong one
    # fails at once.
    init = None if cfg.init_from is None else start_from(cfg.init_from, cfg, fingerprint, hidden)
    partners = in_behavior_order(
        [
            stack_partner(path, manifest, cfg.behavior, fingerprint, hidden)
            for path in cfg.stack_with
        ]
    )
    encoded = [(g, chat_prompt_ids(tokenizer, m)[-cfg.max_len :]) for g, m in prompts]

    def placement(erased, channels, partner=None):
        return build_placement(cfg, manifest, encoded, erased, channels, hidden, model, partner)

    placements = [placement((cfg.behavior,), channels)]
    for partner in partners:
        other = partner.meta.behavior
        both = union_channels([channels, behavior_entry(manifest, other)["eraser_channels"]])
        placements.append(placement((cfg.behavior, other), both, partner))

    embeddings = model.get_input_embeddings().weight.detach()
    max_norm = cfg.max_norm or float(embeddings.float().norm(dim=-1).median())
    if init is None:
        gen = torch.Generator().manual_seed(cfg.seed)
        init_ids = torch.randint(0, embeddings.shape[0], (cfg.num_tokens,), generator=gen)
        prefix = embeddings[init_ids.to(embeddings.device)].float().clone()
    else:
        prefix = init.to(embeddings.device, torch.float32).clone()
    cfg_for_job = dataclasses.replace(cfg, max_norm=max_norm)
    job = EraserJob(model.eval(), prefix, placements, tokenizer.pad_token_id, cfg_for_job)
    work = work_dir_for(out)
    # Stacked: the partners in the order they are drawn, not the flag's, so a reordered command
    # resumes, and the layout, so a partial run from before either was fixed (partners unsorted,
    # each side drawn at random) is refused rather than mixed.
    stacked = (
        {
            "partners": [f"{p.meta.behavior}:{p.meta.name}" for p in partners],
            "layout": "stack order",
        }
        if partners
        else {}
    )
    settings = run_settings(
        "eraser",
        cfg,
        fingerprint=fingerprint,
        stack_with=sorted(map(str, cfg.stack_with)),
        **stacked,
    )
    started = time.time()
    rows = run_loop(
        job,
        job.rows,
        cfg.steps,
        work,
        settings,
        save_every=cfg.save_every,
        desc=f"eraser {cfg.behavior}",
    )

    last = rows[-1]
    training = {
        "ablation": cfg.ablation,
        "steps": cfg.steps,
        "kept": job.kept(),
        "best_loss": job.best_loss if job.kept() == "best" else None,
        "final": {k: last[k] for k in ("loss", "act", "hold", "kl", "norm")},
        "first": {k: rows[0][k] for k in ("loss", "act", "hold", "kl", "norm")},
        "max_norm": max_norm,
        "prompts": len(encoded),
        "kl_positions": placements[0].stats.kl_mask.shape[1],
        "stacked_with": [p.meta.name for p in partners],
        "stacked_steps": sum(r["stacked"] > 0 for r in rows),
        "wall_time_s_last_run": round(time.time() - started, 1),
        "config": {k: str(v) for k, v in dataclasses.asdict(cfg).items()},
    }
    name = cfg.name or f"erase-{cfg.behavior}"
    files = eraser_files(
        out,
        job.result().float().cpu(),
        name=name,
        behavior=cfg.behavior,
        carrier_fingerprint=fingerprint,
        num_layers=model.config.num_hidden_layers,
        num_attention_heads=model.config.num_attention_heads,
        channel_count=sum(len(c) for c in channels) if cfg.ablation != "kl_only" else 0,
        training=training,
        base_model=str(cfg.sft_model or cfg.carrier),
    )
    with atomic_dir(out, overwrite=cfg.overwrite) as tmp:
        for file_name, data in files.items():
            (tmp / file_name).write_bytes(data)
        (tmp / "metrics.jsonl").write_text((work / "metrics.jsonl").read_text())
        plot_curves(rows, tmp / "loss.png", f"eraser {name} ({cfg.ablation})")
    finish_work(work)
    return out
