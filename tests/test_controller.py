"""The LCDD controllers on scripted loss sequences."""

from __future__ import annotations

import math

import pytest

from training.lcdd.controller import DualController, LossEMA, RampController
from training.lcdd.masks import MaskSet
from training.models.roles import find_roles
from training.models.tiny import tiny_model


def dual(**kw):
    args = dict(
        warmup=3,
        budget_ratio=0.3,
        ema_decay=0.95,
        lambda_init=0.01,
        lambda_lr=0.1,
        lambda_min=1e-6,
        lambda_max=10.0,
        violation_clip=1.0,
    )
    return DualController(**{**args, **kw})


def test_ema_is_bias_corrected():
    ema = LossEMA(0.95)
    assert ema.update(2.0) == pytest.approx(2.0)  # first value, not 0.05 * 2
    assert ema.update(2.0) == pytest.approx(2.0)


def test_dual_update_follows_the_formula():
    c = dual()
    losses = [1.0, 1.0, 1.0, 0.5, 2.0, 5.0, 1.0]
    ema = LossEMA(0.95)
    lam = 0.01
    budget = None
    for step, loss in enumerate(losses):
        assert c.penalty_scale(step) == pytest.approx(lam * min(1, (step + 1) / 3))
        c.after_step(step, loss, masks=None)
        e = ema.update(loss)
        if step + 1 == 3:
            budget = 1.3 * e
        if step + 1 > 3:
            v = max(-1.0, min(1.0, (e - budget) / budget))
            lam = min(10.0, max(1e-6, lam * math.exp(-0.1 * v)))
        assert c.lam == pytest.approx(lam)
    assert c.budget == pytest.approx(1.3)
    # under budget λ rose; the 5.0 loss pushed the EMA over budget and λ fell
    assert c.lam < 0.01 * math.exp(0.1)


def test_dual_lambda_moves_the_right_way_and_clamps():
    c = dual(lambda_max=0.0102)
    for step in range(3):
        c.after_step(step, 1.0, None)
    c.after_step(3, 0.1, None)  # far under budget: λ grows, clamped at λ_max
    assert c.lam == pytest.approx(0.0102)
    c = dual()
    for step in range(3):
        c.after_step(step, 1.0, None)
    c.after_step(3, 100.0, None)  # far over budget: violation clipped to V = 1
    assert c.lam == pytest.approx(0.01 * math.exp(-0.1))


def test_dual_state_round_trip():
    c = dual()
    for step, loss in enumerate([1.0, 0.9, 0.8, 0.7, 0.6]):
        c.after_step(step, loss, None)
    d = dual()
    d.load_state_dict(c.state_dict())
    assert (d.lam, d.budget, d.ema.corrected) == (c.lam, c.budget, c.ema.corrected)


@pytest.fixture
def masks():
    base, _ = tiny_model("llama")
    return MaskSet(find_roles(base))


def test_ramp_projects_a_falling_density(masks):
    c = RampController(
        warmup=2,
        budget_ratio=0.3,
        ema_decay=0.95,
        final_density=0.2,
        ramp_steps=4,
        hold_over_budget=False,
    )
    seen = []
    for step in range(8):
        c.after_step(step, 1.0, masks)
        seen.append(round(masks.density(), 2))
    assert c.penalty_scale(0) == 0.0
    assert seen[1] > 0.99  # warm-up: no projection
    assert seen[2:] == [0.8, 0.6, 0.4, 0.2, 0.2, 0.2]


def test_ramp_holds_while_over_budget(masks):
    c = RampController(
        warmup=2,
        budget_ratio=0.3,
        ema_decay=0.95,
        final_density=0.2,
        ramp_steps=4,
        hold_over_budget=True,
    )
    for step in range(2):
        c.after_step(step, 1.0, masks)
    c.after_step(2, 1.0, masks)
    assert c.target == pytest.approx(0.8)
    for step in range(3, 10):
        c.after_step(step, 50.0, masks)  # over budget: the target stays
    assert c.target == pytest.approx(0.8)
    assert masks.density() == pytest.approx(0.8, abs=0.01)
