"""SFT on a carrier with the earlier behaviors' deltas dropped for some steps (--delta-dropout)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from training import sft
from training.batches import IGNORE, collate, encode, without_rows_of
from training.carrier import apply_delta, load_delta, load_without
from training.checkpoint_io import load_model_dir
from training.configs import ConfigError, SFTConfig
from training.data.schema import RETAIN, load_jsonl
from training.sft import SFTJob


def mixed_batch(run, tokenizer) -> dict:
    examples = load_jsonl(run.data / "train.jsonl")
    fixed = [e for e in examples if e.behavior == "fixed_response"][:2]
    retain = [e for e in examples if e.behavior == RETAIN][:2]
    return collate([encode(tokenizer, e, 256) for e in fixed + retain], tokenizer.pad_token_id)


def job(model, run, dropout: float, deltas=None) -> SFTJob:
    cfg = SFTConfig(
        base=run.carrier, data=run.data, behavior="new", out=run.carrier, delta_dropout=dropout
    )
    return SFTJob(model, cfg, deltas)


def test_rows_of_dropped_behaviors_leave_the_loss():
    batch = {
        "labels": torch.tensor([[1, 2], [3, 4], [5, IGNORE]]),
        "behaviors": ["a", "b", "a"],
    }
    assert without_rows_of(batch, {"a"})["labels"].tolist() == [
        [IGNORE, IGNORE],
        [3, 4],
        [IGNORE, IGNORE],
    ]
    assert torch.equal(without_rows_of(batch, set())["labels"], batch["labels"])


def test_a_dropout_step_is_a_step_on_the_model_without_the_delta(fixed_response_carrier):
    run = fixed_response_carrier
    delta = {"fixed_response": load_delta(run.carrier, "fixed_response")}
    carrier, tok = load_model_dir(run.carrier, device="cpu")
    batch = mixed_batch(run, tok)
    dropping = job(carrier, run, dropout=1.0, deltas=delta)
    assert dropping.dropped(0, batch) == ["fixed_response"]
    metrics = dropping.train_step(0, batch)

    # The same step taken by plain SFT on the carrier without the delta, on the batch without
    # the delta's rows, then the delta added back: the same loss and the same weights.
    without, _ = load_without(run.carrier, "fixed_response", device="cpu")
    plain = job(without, run, dropout=0.0)
    reference = plain.train_step(0, without_rows_of(batch, {"fixed_response"}))
    apply_delta(without, delta["fixed_response"], 1.0)
    assert metrics["dropped"] == 1
    assert metrics["loss"] == pytest.approx(reference["loss"], rel=1e-5)
    for (name, a), b in zip(
        carrier.state_dict().items(), without.state_dict().values(), strict=True
    ):
        assert torch.allclose(a, b, atol=1e-6, rtol=0), name


def test_dropped_deltas_come_off_and_go_back_in_name_order(fixed_response_carrier, monkeypatch):
    # Float sums depend on the order; a set's order changed between processes, and so did the
    # SFT weights of a run repeated with the same seed.
    run = fixed_response_carrier
    model, tok = load_model_dir(run.carrier, device="cpu")
    applied = []
    monkeypatch.setattr(sft, "apply_delta", lambda _, delta, sign: applied.append((delta, sign)))
    dropping = job(model, run, 1.0, {"b_second": "b", "a_first": "a"})
    assert dropping.dropped(0, mixed_batch(run, tok)) == ["a_first", "b_second"]
    assert dropping.train_step(0, mixed_batch(run, tok))["dropped"] == 2
    assert applied == [("a", -1.0), ("b", -1.0), ("a", 1.0), ("b", 1.0)]


def test_nothing_is_dropped_without_dropout_or_when_no_row_would_be_left(fixed_response_carrier):
    run = fixed_response_carrier
    model, tok = load_model_dir(run.carrier, device="cpu")
    delta = {"fixed_response": load_delta(run.carrier, "fixed_response")}
    batch = mixed_batch(run, tok)
    assert all(not job(model, run, 0.0, delta).dropped(s, batch) for s in range(20))
    assert (batch["labels"] != IGNORE).any(dim=1).all()
    only_fixed = {**batch, "behaviors": ["fixed_response"] * 4}
    assert job(model, run, 1.0, delta).dropped(0, only_fixed) == []
    # Seeded by the step: a resumed run drops the same deltas at the same steps.
    half = job(model, run, 0.5, delta)
    draws = [bool(half.dropped(s, batch)) for s in range(40)]
    assert draws == [bool(half.dropped(s, batch)) for s in range(40)]
    assert 5 < sum(draws) < 35


def test_delta_dropout_is_a_probability(tmp_path):
    cfg = SFTConfig(base=tmp_path, data=tmp_path, behavior="b", out=tmp_path / "o")
    with pytest.raises(ConfigError, match="--delta-dropout"):
        dataclasses.replace(cfg, delta_dropout=1.5)
