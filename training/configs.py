"""Job settings as dataclasses; the CLI builds its flags from these fields and their docstrings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

Controller = Literal["dual", "ramp"]
MaskInit = Literal["random", "delta"]
CONTROLLERS = get_args(Controller)
MASK_INITS = get_args(MaskInit)
MaskOptimizer = Literal["sgd", "adam"]
MASK_OPTIMIZERS = get_args(MaskOptimizer)


class ConfigError(ValueError):
    """A setting out of its range."""


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


@dataclass
class SFTConfig:
    """Phase 1: full fine-tuning of every decoder projection on one behavior plus retain data."""

    base: Path
    """Base model directory (a plain model or a carrier holding earlier behaviors)."""
    data: Path
    """Training JSONL: rows of this behavior, retain rows, rows of the base carrier's behaviors."""
    behavior: str
    """Name of the behavior to learn (rows tagged with it)."""
    out: Path
    """Output model directory."""
    lr: float = 5e-5
    """AdamW learning rate of the projection weights."""
    epochs: float = 3.0
    """Passes over the selected rows."""
    batch_size: int = 8
    """Rows per optimizer step."""
    max_len: int = 256
    """Tokens per row after the chat template; longer rows lose the end of the reply."""
    group_by_length: bool = False
    """Batch rows of similar length together (less padding; a different row order)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    delta_dropout: float = 0.0
    """Per step and per behavior the base carrier holds, the probability of training that step
    without the behavior's delta (its rows out of the loss), so the new behavior does not come to
    rely on it and survives its eraser."""
    grad_clip: float = 1.0
    """Global gradient-norm clip."""
    seed: int = 0
    """Seed of data order and initialization."""
    save_every: int = 25
    """Steps between resumable checkpoints."""
    device: str = "auto"
    """cpu, cuda, cuda:N or auto (CUDA when present; bf16 there, fp32 on CPU)."""
    overwrite: bool = False
    """Replace an existing output directory."""

    def __post_init__(self):
        _require(self.lr > 0, f"--lr must be > 0, got {self.lr}")
        _require(self.epochs > 0, f"--epochs must be > 0, got {self.epochs}")
        _require(
            0 <= self.delta_dropout <= 1,
            f"--delta-dropout must be in [0, 1], got {self.delta_dropout}",
        )
        _require(self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}")
        _require(self.max_len >= 8, f"--max-len must be >= 8, got {self.max_len}")
        _require(self.save_every >= 1, f"--save-every must be >= 1, got {self.save_every}")


@dataclass
class LCDDConfig:
    """Phase 2: Loss-Constrained Dual Descent. Defaults are the paper's (docs/method.md,
    "Carriers")."""

    base: Path
    """Base model directory: M0, or the carrier holding the behaviors added before this one."""
    sft: Path
    """The SFT model of this behavior (phase 1 output, trained from the same base)."""
    data: Path
    """Training JSONL (same selection as phase 1)."""
    behavior: str
    """Name of the behavior this carrier adds."""
    out: Path
    """Output carrier directory."""
    steps: int = 0
    """Optimizer steps; 0 means `epochs` passes over the selected rows."""
    epochs: float = 20.0
    """Passes over the data when `steps` is 0 (paper: 20)."""
    batch_size: int = 8
    """Rows per optimizer step."""
    weight_lr: float = 2e-5
    """AdamW learning rate of W_ft, the fine-tuned weights that keep training."""
    mask_lr: float = 0.1
    """Learning rate of the mask logits θ."""
    mask_optimizer: MaskOptimizer = "sgd"
    """`sgd` (paper; no momentum) or `adam`. The loss gradient reaching θ through an SFT delta is
    ~1e-7 per step on SmolLM2, so SGD never moves θ; Adam's per-unit normalized steps move it by
    about `mask_lr` a step in the direction the loss asks, so the masks are learned, not set by
    their init."""
    controller: Controller = "dual"
    """`dual`: the paper's λ controller; `ramp`: target-density projection (CPU schedule)."""
    warmup: int = 300
    """Steps before the budget is fixed; the penalty ramps up over them (dual)."""
    budget_ratio: float = 0.30
    """r in ε = (1 + r)·b, b the loss EMA when warm-up ends."""
    ema_decay: float = 0.95
    """Decay of the loss EMA the budget is checked on."""
    lambda_init: float = 0.01
    """λ₀, the initial penalty weight (dual)."""
    lambda_lr: float = 0.1
    """η of the exponentiated-gradient λ update (dual)."""
    lambda_min: float = 1e-6
    """Lower clamp of λ (dual)."""
    lambda_max: float = 10.0
    """Upper clamp of λ (dual; paper suggests 0.5 for safety/fixed response, 0.3 for style)."""
    violation_clip: float = 1.0
    """V: the relative budget violation is clipped to [−V, V] (dual)."""
    final_density: float = 0.1
    """Active fraction the ramp ends at (ramp)."""
    ramp_steps: int = 150
    """Steps after warm-up over which the target density falls from 1 to `final_density` (ramp)."""
    hold_over_budget: bool = False
    """Ramp: stop lowering the density while the loss EMA is over budget."""
    init_mean: float = 1.5
    """Mean of the mask-logit init (σ(1.5) ≈ 0.82; ~99.9% of units start on)."""
    init_std: float = 0.5
    """Std of the mask-logit init."""
    mask_init: MaskInit = "random"
    """`random`: θ ~ N(init_mean, init_std) (paper); `delta`: init_mean + init_std·z, z the
    standardized log norm of the delta each unit gates, so units carrying more delta rank first."""
    max_len: int = 256
    """Tokens per row after the chat template."""
    group_by_length: bool = False
    """Batch rows of similar length together (less padding; a different row order)."""
    grad_clip: float = 1.0
    """Gradient-norm clip of W_ft."""
    seed: int = 0
    """Seed of data order and mask init."""
    save_every: int = 25
    """Steps between resumable checkpoints."""
    device: str = "auto"
    """cpu, cuda, cuda:N or auto."""
    overwrite: bool = False
    """Replace an existing output directory."""

    def __post_init__(self):
        _require(
            self.controller in CONTROLLERS,
            f"unknown controller {self.controller!r}; choose one of {', '.join(CONTROLLERS)}",
        )
        _require(
            self.mask_init in MASK_INITS,
            f"unknown mask init {self.mask_init!r}; choose one of {', '.join(MASK_INITS)}",
        )
        _require(
            self.mask_optimizer in MASK_OPTIMIZERS,
            f"unknown mask optimizer {self.mask_optimizer!r}; "
            f"choose one of {', '.join(MASK_OPTIMIZERS)}",
        )
        _require(self.steps >= 0, f"--steps must be >= 0, got {self.steps}")
        _require(self.steps > 0 or self.epochs > 0, "--epochs must be > 0 when --steps is 0")
        _require(self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}")
        _require(self.warmup >= 1, f"--warmup must be >= 1, got {self.warmup}")
        _require(
            0 < self.final_density <= 1,
            f"--final-density must be in (0, 1], got {self.final_density}",
        )
        _require(0 < self.ema_decay < 1, f"--ema-decay must be in (0, 1), got {self.ema_decay}")
        _require(
            0 < self.lambda_min <= self.lambda_init <= self.lambda_max,
            "need 0 < --lambda-min <= --lambda-init <= --lambda-max",
        )
        _require(self.save_every >= 1, f"--save-every must be >= 1, got {self.save_every}")


Ablation = Literal["none", "plain_sft", "random_channels", "kl_only"]
Match = Literal["batch_mean", "per_prompt"]
ChannelSet = Literal["behavior", "carrier"]
KLOn = Literal["prompt", "reply"]
OthersReference = Literal["target", "carrier"]
Keep = Literal["best", "last"]
ABLATIONS = get_args(Ablation)
MATCHES = get_args(Match)
CHANNEL_SETS = get_args(ChannelSet)
KL_ON = get_args(KLOn)
OTHERS_REFERENCES = get_args(OthersReference)
KEEPS = get_args(Keep)


@dataclass
class EraserConfig:
    """SFT-Eraser: a soft prompt that drives a behavior's carrier channels back to the target model
    (the carrier without that behavior). Defaults are the paper's (docs/method.md, "Erasers")."""

    carrier: Path
    """Carrier directory holding the behavior."""
    behavior: str
    """Behavior to erase."""
    data: Path
    """JSONL whose prompts drive the optimization (the behavior's rows and retain rows are used)."""
    out: Path
    """Output eraser directory (PEFT prompt-tuning adapter + eraser.json)."""
    name: str = ""
    """Eraser name; empty: erase-<behavior>."""
    ablation: Ablation = "none"
    """none | plain_sft (optimize on --sft-model instead) | random_channels | kl_only."""
    sft_model: Path | None = None
    """The plain SFT model of this behavior: the eraser is optimized on it instead of the carrier
    (needed by --ablation plain_sft; with random_channels or kl_only, that arm on it)."""
    num_tokens: int = 20
    """n, the soft-prompt length."""
    steps: int = 2000
    """Optimizer steps."""
    batch_size: int = 16
    """Prompts per step."""
    lr: float = 3e-3
    """Adam learning rate."""
    lr_decay: float = 0.0
    """Share of the steps, at the end, over which the learning rate falls linearly towards 0
    (0: constant, the paper)."""
    keep: Keep = "best"
    """Which P is written: best (paper: the lowest loss of a step alone, i.e. of that step's batch)
    or last (the P after the last step; with --lr-decay, where the optimization settled)."""
    match: Match = "batch_mean"
    """batch_mean (paper): the batch mean of last-token states against their mean over all
    prompts; per_prompt: each prompt's states against the target's on the same prompt."""
    channel_set: ChannelSet = "behavior"
    """Channels matched: behavior (paper: the erased behavior's write channels) or carrier (every
    behavior's, so the others are held where the target model has them)."""
    hold_others: bool = False
    """Add a per-prompt term holding the carrier's other behaviors' channels (those not in the
    matched set) where the target model has them, so erasing one behavior does not move another."""
    kl_weight: float = 0.7
    """w_KL."""
    kl_on: KLOn = "prompt"
    """prompt (paper): KL on the last --kl-positions prompt positions; reply: KL on the target
    model's own greedy reply (first --reply-tokens tokens, teacher-forced), so the eraser must
    reproduce the target's answers, benign ones included, not only their first token."""
    kl_positions: int = 8
    """k: the KL term covers the last k prompt positions (--kl-on prompt)."""
    reply_tokens: int = 16
    """Target reply tokens the KL term covers (--kl-on reply)."""
    norm_weight: float = 0.1
    """w_2, weight of mean_j ‖P_j‖²."""
    max_norm: float = 0.0
    """Row-norm bound of P after each step; 0 = the median row norm of the embedding matrix."""
    max_prompts: int = 200
    """Prompts used: half the behavior's, half retain (as available)."""
    retain_others: bool = False
    """Share the retain half between benign prompts and the carrier's other behaviors' triggering
    prompts, where the target model still shows those behaviors, so the eraser learns to leave
    them on (with --kl-on reply it must reproduce the target's refusals, styles...)."""
    others_reference: OthersReference = "target"
    """With --retain-others, what the other behaviors' prompts are matched against: target (the
    carrier without the erased behaviors, as every other prompt) or carrier (the model itself: on
    prompts of a behavior it does not erase, the eraser is asked to change nothing, also where the
    target model has lost some of that behavior)."""
    stack_with: tuple[Path, ...] = ()
    """Eraser directories of other behaviors of this carrier (kept frozen): on --stack-prob of the
    steps the eraser is trained stacked with one of them, on the side the server stacks the pair
    (`eraser_store.stack_key`: by behavior name), against the carrier without both behaviors, so
    the pair switches both off when a request names the two.
    One per behavior; their order does not matter (drawn in behavior order)."""
    init_from: Path | None = None
    """An eraser of this behavior on this carrier, of --num-tokens rows, to start P from instead of
    random token embeddings: a second pass stacked with later erasers continues where the first
    stopped rather than starting over."""
    stack_prob: float = 0.5
    """Share of the steps trained stacked with a --stack-with eraser (one drawn per step)."""
    grad_clip: float = 1.0
    """Gradient-norm clip of P."""
    max_len: int = 256
    """Prompt tokens kept (from the end, so the last positions stay)."""
    seed: int = 0
    """Seed of the prompt choice, batch order, trigger init and random channels."""
    save_every: int = 50
    """Steps between resumable checkpoints."""
    device: str = "auto"
    """cpu, cuda, cuda:N or auto."""
    overwrite: bool = False
    """Replace an existing output directory."""
    register: str = ""
    """Server URL: upload the eraser to its admin route (token: $SFT_ERASER_ADMIN_TOKEN)."""

    def __post_init__(self):
        _require(
            self.ablation in ABLATIONS,
            f"unknown ablation {self.ablation!r}; choose one of {', '.join(ABLATIONS)}",
        )
        _require(
            self.keep in KEEPS, f"unknown --keep {self.keep!r}; choose one of {', '.join(KEEPS)}"
        )
        _require(0 <= self.lr_decay <= 1, f"--lr-decay must be in [0, 1], got {self.lr_decay}")
        _require(
            self.match in MATCHES,
            f"unknown --match {self.match!r}; choose one of {', '.join(MATCHES)}",
        )
        _require(
            self.channel_set in CHANNEL_SETS,
            f"unknown --channel-set {self.channel_set!r}; choose one of {', '.join(CHANNEL_SETS)}",
        )
        _require(
            self.kl_on in KL_ON,
            f"unknown --kl-on {self.kl_on!r}; choose one of {', '.join(KL_ON)}",
        )
        _require(
            self.others_reference in OTHERS_REFERENCES,
            f"unknown --others-reference {self.others_reference!r}; choose one of "
            + ", ".join(OTHERS_REFERENCES),
        )
        _require(
            self.others_reference == "target" or self.retain_others,
            "--others-reference carrier needs --retain-others (the other behaviors' prompts)",
        )
        _require(
            self.ablation != "plain_sft" or self.sft_model is not None,
            "--ablation plain_sft needs --sft-model",
        )
        _require(
            self.ablation != "none" or self.sft_model is None,
            "--sft-model trains on the plain SFT model: name an --ablation (plain_sft: the "
            "carrier's channels there; random_channels, kl_only: those arms there)",
        )
        _require(self.num_tokens >= 1, f"--num-tokens must be >= 1, got {self.num_tokens}")
        _require(self.steps >= 1, f"--steps must be >= 1, got {self.steps}")
        _require(self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}")
        _require(self.kl_positions >= 1, f"--kl-positions must be >= 1, got {self.kl_positions}")
        _require(self.reply_tokens >= 1, f"--reply-tokens must be >= 1, got {self.reply_tokens}")
        _require(self.max_prompts >= 2, f"--max-prompts must be >= 2, got {self.max_prompts}")
        _require(
            0 <= self.stack_prob <= 1, f"--stack-prob must be in [0, 1], got {self.stack_prob}"
        )
        _require(
            self.init_from is None or self.ablation == "none",
            "--init-from continues a carrier eraser; it does not go with an --ablation",
        )
        _require(
            not self.stack_with or self.ablation == "none",
            "--stack-with trains a carrier eraser; it does not go with an --ablation",
        )
        for flag, weight in (("--kl-weight", self.kl_weight), ("--norm-weight", self.norm_weight)):
            _require(weight >= 0, f"{flag} must be >= 0, got {weight}")
