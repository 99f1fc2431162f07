"""How LCDD trades active units against the loss budget.

`DualController` is the paper's: penalty λ·Σσ(θ), λ moved by exponentiated gradient on the
budget violation. `RampController` is this project's CPU schedule (docs/training.md): no
penalty; the active fraction is projected onto a target that falls linearly, and (optionally)
stops falling while the loss EMA is over budget.
"""

from __future__ import annotations

import math

from training.lcdd.masks import MaskSet


class LossEMA:
    """Exponential moving average of the SFT loss with Adam-style bias correction."""

    def __init__(self, decay: float):
        self.decay, self.value, self.count = decay, 0.0, 0

    def update(self, x: float) -> float:
        self.value = self.decay * self.value + (1 - self.decay) * x
        self.count += 1
        return self.corrected

    @property
    def corrected(self) -> float:
        return self.value / (1 - self.decay**self.count) if self.count else float("nan")


class _BudgetController:
    """Shared part: the loss EMA and the budget ε = (1 + r)·b fixed when warm-up ends."""

    def __init__(self, *, warmup: int, budget_ratio: float, ema_decay: float):
        self.warmup, self.budget_ratio = warmup, budget_ratio
        self.ema = LossEMA(ema_decay)
        self.budget: float | None = None

    def _observe(self, step: int, loss: float) -> bool:
        """Update the EMA; True once past warm-up (the budget is set)."""
        self.ema.update(loss)
        if step + 1 == self.warmup or (self.budget is None and step + 1 > self.warmup):
            self.budget = (1 + self.budget_ratio) * self.ema.corrected
        return step + 1 > self.warmup

    def over_budget(self) -> bool:
        return self.budget is not None and self.ema.corrected > self.budget

    def state_dict(self) -> dict:
        return {"ema": (self.ema.value, self.ema.count), "budget": self.budget}

    def load_state_dict(self, s: dict) -> None:
        self.ema.value, self.ema.count = s["ema"]
        self.budget = s["budget"]

    def stats(self) -> dict[str, float]:
        return {"ema": self.ema.corrected, "budget": self.budget if self.budget else float("nan")}


class DualController(_BudgetController):
    def __init__(
        self,
        *,
        warmup: int,
        budget_ratio: float,
        ema_decay: float,
        lambda_init: float,
        lambda_lr: float,
        lambda_min: float,
        lambda_max: float,
        violation_clip: float,
    ):
        super().__init__(warmup=warmup, budget_ratio=budget_ratio, ema_decay=ema_decay)
        self.lam = lambda_init
        self.lambda_lr, self.lambda_min, self.lambda_max = lambda_lr, lambda_min, lambda_max
        self.violation_clip = violation_clip

    def penalty_scale(self, step: int) -> float:
        return self.lam * min(1.0, (step + 1) / self.warmup)

    def after_step(self, step: int, loss: float, masks: MaskSet) -> None:
        if not self._observe(step, loss):
            return
        v = (self.ema.corrected - self.budget) / self.budget
        v = max(-self.violation_clip, min(self.violation_clip, v))
        self.lam = min(
            self.lambda_max, max(self.lambda_min, self.lam * math.exp(-self.lambda_lr * v))
        )

    def state_dict(self) -> dict:
        return {**super().state_dict(), "lambda": self.lam}

    def load_state_dict(self, s: dict) -> None:
        super().load_state_dict(s)
        self.lam = s["lambda"]

    def stats(self) -> dict[str, float]:
        return {**super().stats(), "lambda": self.lam}


class RampController(_BudgetController):
    def __init__(
        self,
        *,
        warmup: int,
        budget_ratio: float,
        ema_decay: float,
        final_density: float,
        ramp_steps: int,
        hold_over_budget: bool,
    ):
        super().__init__(warmup=warmup, budget_ratio=budget_ratio, ema_decay=ema_decay)
        self.final_density, self.hold_over_budget = final_density, hold_over_budget
        self.rate = (1.0 - final_density) / max(1, ramp_steps)
        self.target = 1.0

    def penalty_scale(self, step: int) -> float:
        return 0.0

    def after_step(self, step: int, loss: float, masks: MaskSet) -> None:
        if not self._observe(step, loss):
            return
        if not (self.hold_over_budget and self.over_budget()):
            self.target = max(self.final_density, self.target - self.rate)
        masks.keep_top(self.target)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "target": self.target}

    def load_state_dict(self, s: dict) -> None:
        super().load_state_dict(s)
        self.target = s["target"]

    def stats(self) -> dict[str, float]:
        return {**super().stats(), "target_density": self.target}
