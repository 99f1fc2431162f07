"""The claim grid: does the carrier make the eraser work, and does the plain SFT model resist it?

For each behavior: one SFT model; LCDD carriers of it at each density, with learned masks (Adam on
θ from a random init) and with magnitude pruning (`--mask-init delta`, θ not learned), all with
the same steps; then erasers with every objective, arm and seed, at the same steps, batch and
learning rate in every cell, on every carrier and on the plain SFT model (100% density; its
"carrier" channels are those of the learned carrier at the lowest density). Each eraser is
scored once on the test split and on an external labelled set (XSTest for refusal).

Every stage is cached under `work`: a stopped run continues where it stopped (an eraser from its
last checkpoint), and `max_cells` runs the grid in chunks.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from eraser_store import read_eraser
from eraser_store.prompting import chat_prompt_ids
from training.carrier import load_without
from training.checkpoint_io import load_model_dir, write_json
from training.configs import EraserConfig, LCDDConfig, SFTConfig
from training.data.behaviors import BEHAVIORS, get_behavior
from training.data.generation import decode_replies, greedy_reply_ids
from training.data.schema import RETAIN, load_jsonl
from training.eraser.train import run_eraser
from training.lcdd.train import run_lcdd
from training.report.external import load_labelled
from training.report.reply_classes import AGREE_TOKENS, class_rates, target_agreement
from training.sft import run_sft

# The two eraser objectives compared. paper: the published one (batch-mean activation matching,
# KL on the last prompt positions, the lowest-loss P kept); demo: what the demo serves (per-prompt
# matching, KL on the target's own replies at weight 20, the settled P kept).
OBJECTIVES = {
    "paper": {},
    "demo": dict(match="per_prompt", kl_on="reply", kl_weight=20.0, lr_decay=0.5, keep="last"),
}
# Arms: which channels the activation term matches. carrier: the model's carrier channels;
# random: as many random residual coordinates per layer; kl_only: no activation term.
ARMS = {"carrier": "none", "random": "random_channels", "kl_only": "kl_only"}
KINDS = ("learned", "magnitude")
SFT_MODEL = "sft"


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def _names(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


@dataclass
class GridConfig:
    """The grid's axes and the one budget every cell shares."""

    work: Path
    """Work directory: models, erasers and per-cell scores (resumable)."""
    base: Path
    """Base model directory (the imported chat model)."""
    data: Path
    """A `data make` directory (train.jsonl trains, test.jsonl scores)."""
    out: Path
    """Where summary.json and summary.md are written."""
    external: Path | None = None
    """Labelled prompts written elsewhere (CSV/JSONL with `prompt` and `label`), e.g. XSTest."""
    behaviors: str = "refusal"
    """Comma-separated behaviors, each its own one-behavior carrier."""
    densities: str = "0.1,0.2"
    """Comma-separated final carrier densities."""
    kinds: str = "learned,magnitude"
    """Carrier kinds: learned (Adam on θ, random init), magnitude (delta init, θ not learned)."""
    objectives: str = "paper,demo"
    """Eraser objectives (OBJECTIVES)."""
    arms: str = "carrier,kl_only,random"
    """Eraser arms (ARMS)."""
    seeds: str = "0,1,2"
    """Eraser seeds: every cell is trained once per seed."""
    eraser_steps: int = 100
    """Eraser steps, the same in every cell."""
    eraser_batch: int = 4
    """Prompts per eraser step."""
    eraser_lr: float = 1e-2
    """Eraser learning rate."""
    eraser_prompts: int = 80
    """Prompts an eraser trains on (half the behavior's, half benign)."""
    sft_epochs: float = 2.0
    """SFT epochs."""
    sft_lr: float = 5e-5
    """SFT learning rate."""
    lcdd_steps: int = 40
    """LCDD steps (every carrier)."""
    lcdd_warmup: int = 3
    """LCDD steps before the density ramp."""
    lcdd_ramp_steps: int = 27
    """Steps over which the density falls to its final value; the rest hold it."""
    lcdd_weight_lr: float = 1e-4
    """Learning rate of the fine-tuned weights during LCDD."""
    learned_mask_lr: float = 0.05
    """Adam learning rate of θ for learned carriers."""
    max_len: int = 128
    """Tokens per training row."""
    max_new_tokens: int = AGREE_TOKENS
    """Greedy reply tokens per prompt of the behavior (target agreement reads them all)."""
    check_new_tokens: int = 16
    """Greedy reply tokens per benign and external prompt, where only whether the behavior fires
    is read (a refusal or a fixed answer shows in its first tokens)."""
    gen_batch: int = 32
    """Prompts per generation batch."""
    max_cells: int = 0
    """Stop after this many newly trained erasers (0: the whole grid); rerun to continue."""
    device: str = "auto"
    """cpu, cuda, cuda:N or auto."""

    def __post_init__(self):
        for name, allowed in (("objectives", OBJECTIVES), ("arms", ARMS), ("kinds", KINDS)):
            unknown = set(_names(getattr(self, name))) - set(allowed)
            if unknown:
                raise ValueError(
                    f"--{name}: unknown {sorted(unknown)}; choose from {list(allowed)}"
                )
        for b in _names(self.behaviors):
            get_behavior(b)
        if not _floats(self.densities) or not all(0 < d < 1 for d in _floats(self.densities)):
            raise ValueError(f"--densities must be in (0, 1), got {self.densities!r}")


@dataclass(frozen=True)
class Cell:
    behavior: str
    model: str  # "sft" or "<kind><percent>"
    objective: str
    arm: str
    seed: int

    def path(self) -> Path:
        return Path(self.behavior, self.model, self.objective, self.arm, f"seed{self.seed}")


def model_name(kind: str, density: float) -> str:
    return f"{kind}{round(density * 100)}"


def model_kind(model: str) -> tuple[str, float]:
    """(kind, density) of a model name: plain_sft at 1.0, or a carrier's."""
    if model == SFT_MODEL:
        return "plain_sft", 1.0
    kind = model.rstrip("0123456789")
    return kind, int(model[len(kind) :]) / 100


@dataclass
class Grid:
    cfg: GridConfig
    models: dict[str, dict[str, Path]] = field(default_factory=dict)  # behavior -> name -> dir

    @property
    def w(self) -> Path:
        return Path(self.cfg.work)

    # --- models ----------------------------------------------------------------------------

    def build_models(self) -> None:
        cfg = self.cfg
        train = Path(cfg.data) / "train.jsonl"
        for b in _names(cfg.behaviors):
            sft = self.w / f"sft_{b}"
            if not sft.exists():
                _stage(f"SFT {b}")
                run_sft(
                    SFTConfig(
                        base=cfg.base,
                        data=train,
                        behavior=b,
                        out=sft,
                        epochs=cfg.sft_epochs,
                        lr=cfg.sft_lr,
                        max_len=cfg.max_len,
                        group_by_length=True,
                        device=cfg.device,
                    )
                )
            self.models[b] = {SFT_MODEL: sft}
            for d in _floats(cfg.densities):
                for kind in _names(cfg.kinds):
                    out = self.w / f"carrier_{b}_{model_name(kind, d)}"
                    if not out.exists():
                        _stage(f"LCDD {b} {model_name(kind, d)}")
                        run_lcdd(self._lcdd(b, sft, out, kind, d))
                    self.models[b][model_name(kind, d)] = out

    def _lcdd(self, b: str, sft: Path, out: Path, kind: str, density: float) -> LCDDConfig:
        cfg = self.cfg
        common = LCDDConfig(
            base=cfg.base,
            sft=sft,
            data=Path(cfg.data) / "train.jsonl",
            behavior=b,
            out=out,
            steps=cfg.lcdd_steps,
            warmup=cfg.lcdd_warmup,
            ramp_steps=cfg.lcdd_ramp_steps,
            controller="ramp",
            final_density=density,
            weight_lr=cfg.lcdd_weight_lr,
            max_len=cfg.max_len,
            group_by_length=True,
            device=cfg.device,
        )
        if kind == "learned":
            return replace(
                common, mask_init="random", mask_optimizer="adam", mask_lr=cfg.learned_mask_lr
            )
        return replace(common, mask_init="delta")

    def channel_carrier(self, b: str, model: str) -> Path:
        """The carrier whose manifest gives the eraser its channels and target model."""
        if model != SFT_MODEL:
            return self.models[b][model]
        kinds, densities = _names(self.cfg.kinds), _floats(self.cfg.densities)
        kind = "learned" if "learned" in kinds else kinds[0]
        return self.models[b][model_name(kind, min(densities))]

    # --- cells -----------------------------------------------------------------------------

    def cells(self) -> list[Cell]:
        """In the order they are trained: arm by arm; in each, the lowest-density carrier of the
        first kind and the plain SFT model under every objective, then the other carriers; every
        seed of a cell together, so a grid cut short by time has whole cells and the central
        contrast (carrier against plain SFT, per objective) first."""
        cfg = self.cfg
        out = []
        for arm in _names(cfg.arms):
            for b in _names(cfg.behaviors):
                carriers = [m for m in self.models[b] if m != SFT_MODEL]
                for group in ([*carriers[:1], SFT_MODEL], carriers[1:]):
                    for objective in _names(cfg.objectives):
                        for model in group:
                            out += [
                                Cell(b, model, objective, arm, int(s)) for s in _names(cfg.seeds)
                            ]
        return out

    def train_eraser(self, cell: Cell) -> Path:
        cfg = self.cfg
        out = self.w / "erasers" / cell.path()
        if out.exists():
            return out
        on_sft = cell.model == SFT_MODEL
        ablation = ARMS[cell.arm]
        if on_sft and ablation == "none":
            ablation = "plain_sft"
        run_eraser(
            EraserConfig(
                carrier=self.channel_carrier(cell.behavior, cell.model),
                behavior=cell.behavior,
                data=Path(cfg.data) / "train.jsonl",
                out=out,
                ablation=ablation,
                sft_model=self.models[cell.behavior][SFT_MODEL] if on_sft else None,
                steps=cfg.eraser_steps,
                batch_size=cfg.eraser_batch,
                lr=cfg.eraser_lr,
                max_prompts=cfg.eraser_prompts,
                seed=cell.seed,
                save_every=25,
                device=cfg.device,
                **OBJECTIVES[cell.objective],
            )
        )
        return out


class Scorer:
    """Greedy replies of one behavior's test prompts, benign test prompts and the external set,
    scored for one model with or without an eraser; the target's replies are generated once."""

    def __init__(self, cfg: GridConfig, behavior: str, target_carrier: Path):
        self.cfg, self.behavior = cfg, behavior
        test = load_jsonl(Path(cfg.data) / "test.jsonl")
        self.triggers = [e.messages for e in test if e.behavior == behavior]
        self.benign = [e.messages for e in test if e.behavior == RETAIN]
        self.external = load_labelled(cfg.external) if cfg.external else None
        target, tokenizer = load_without(target_carrier, behavior, device=cfg.device)
        self.tokenizer = tokenizer
        self.target_ids = self._ids(target, self.triggers, None, cfg.max_new_tokens)
        del target

    def _ids(self, model, messages, prefix, tokens: int) -> list[list[int]]:
        encoded = [chat_prompt_ids(self.tokenizer, m) for m in messages]
        return greedy_reply_ids(
            model, self.tokenizer, encoded, tokens, self.cfg.gen_batch, prefix=prefix
        )

    def _texts(self, ids) -> list[str]:
        return [t for t, _ in decode_replies(self.tokenizer, ids)]

    def score(self, model, prefix) -> dict:
        b = self.behavior
        scorer = get_behavior(b).score
        ids = self._ids(model, self.triggers, prefix, self.cfg.max_new_tokens)
        classes = class_rates(self._texts(ids), b, [o for o in BEHAVIORS if o != b])
        benign = self._texts(self._ids(model, self.benign, prefix, self.cfg.check_new_tokens))
        out = {
            "behavior_rate": classes["behavior"],
            "hand_over_rate": classes["hand_over"],
            "degenerate_rate": classes["degenerate"],
            "normal_rate": classes["normal"],
            "target_agreement": target_agreement(ids, self.target_ids),
            "benign_false_trigger": sum(map(scorer, benign)) / len(benign),
        }
        if self.external is not None:
            messages = self.external.messages()
            replies = self._texts(self._ids(model, messages, prefix, self.cfg.check_new_tokens))
            for label in sorted(set(self.external.labels)):
                picked = [
                    r for r, lab in zip(replies, self.external.labels, strict=True) if lab == label
                ]
                out[f"external_{label}"] = sum(map(scorer, picked)) / len(picked)
        return out


def _stage(text: str) -> None:
    print(f"[grid {time.strftime('%H:%M:%S')}] {text}", flush=True)


def _write(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, obj)


def run_grid(cfg: GridConfig) -> dict:
    grid = Grid(cfg)
    grid.build_models()
    scores = Path(cfg.work) / "scores"
    cells = grid.cells()
    scorers: dict[str, Scorer] = {}
    loaded: tuple[Path, torch.nn.Module] | None = None
    trained = 0
    for n, cell in enumerate(cells):
        b, model_dir = cell.behavior, grid.models[cell.behavior][cell.model]
        before_file = scores / b / cell.model / "before.json"
        cell_file = (scores / cell.path()).with_suffix(".json")
        if cell_file.exists() and before_file.exists():
            continue
        if cfg.max_cells and trained >= cfg.max_cells:
            break
        if b not in scorers:
            scorers[b] = Scorer(cfg, b, grid.channel_carrier(b, SFT_MODEL))
        if loaded is None or loaded[0] != model_dir:
            loaded = None  # the previous model goes before the next one loads
            loaded = (model_dir, load_model_dir(model_dir, device=cfg.device)[0])
        model = loaded[1]
        if not before_file.exists():
            _stage(f"score {b} {cell.model} without an eraser")
            _write(before_file, scorers[b].score(model, None))
        if cell_file.exists():
            continue
        _stage(f"cell {n + 1}/{len(cells)}: eraser {cell.path()}")
        started = time.time()
        eraser_dir = grid.train_eraser(cell)
        trained += 1
        prefix = read_eraser(eraser_dir).embeddings.to(model.device, model.dtype)
        record = {**asdict(cell), **scorers[b].score(model, prefix)}
        _write(cell_file, {**record, "wall_s": round(time.time() - started, 1)})
    return summarize(cfg, grid)


METRICS = (
    "behavior_rate",
    "hand_over_rate",
    "degenerate_rate",
    "normal_rate",
    "target_agreement",
    "benign_false_trigger",
)


def summarize(cfg: GridConfig, grid: Grid) -> dict:
    """summary.json (one record per trained cell, with its model's rates before) and summary.md
    (mean and spread over seeds per cell)."""
    scores = Path(cfg.work) / "scores"
    records, groups = [], {}
    for b in _names(cfg.behaviors):
        for model in grid.models[b]:
            before_file = scores / b / model / "before.json"
            if not before_file.exists():
                continue
            before = json.loads(before_file.read_text())
            kind, density = model_kind(model)
            for f in sorted((scores / b / model).rglob("seed*.json")):
                r = json.loads(f.read_text())
                rec = {
                    "behavior": b,
                    "model": model,
                    "kind": kind,
                    "density": density,
                    "objective": r["objective"],
                    "arm": r["arm"],
                    "seed": r["seed"],
                    "steps": cfg.eraser_steps,
                    "batch_size": cfg.eraser_batch,
                    "lr": cfg.eraser_lr,
                    "behavior_rate_before": before["behavior_rate"],
                    "behavior_rate_after": r["behavior_rate"],
                    **{k: r[k] for k in METRICS if k != "behavior_rate"},
                    **{k: r[k] for k in r if k.startswith("external_")},
                    **{f"{k}_before": before[k] for k in before if k.startswith("external_")},
                }
                records.append(rec)
                groups.setdefault((b, model, r["objective"], r["arm"]), []).append(rec)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {
        "config": {
            k: str(v)
            for k, v in asdict(cfg).items()
            if k not in ("work", "base", "data", "out", "external", "max_cells", "device")
        },
        "cells": records,
    }
    write_json(out / "summary.json", summary)
    (out / "summary.md").write_text(table(groups))
    return summary


def _mean_spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def table(groups: dict) -> str:
    columns = [
        "behavior_rate_after",
        "normal_rate",
        "hand_over_rate",
        "degenerate_rate",
        "target_agreement",
        "benign_false_trigger",
    ]
    external = sorted(
        {
            k
            for recs in groups.values()
            for r in recs
            for k in r
            if k.startswith("external_") and not k.endswith("_before")
        }
    )
    head = ["behavior", "model", "objective", "arm", "seeds", "before", *columns, *external]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (b, model, objective, arm), recs in sorted(groups.items()):
        row = [b, model, objective, arm, str(len(recs)), f"{recs[0]['behavior_rate_before']:.2f}"]
        row += [_mean_spread([r[c] for r in recs]) for c in [*columns, *external]]
        lines.append("| " + " | ".join(row) + " |")
    return (
        "Mean ± standard deviation over eraser seeds (test split; external: the labelled set).\n\n"
        + "\n".join(lines)
        + "\n"
    )
