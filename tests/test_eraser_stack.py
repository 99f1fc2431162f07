"""`train eraser --stack-with`: some steps train the eraser stacked with a frozen partner eraser,
in the server's stacking order (by behavior name), against the carrier without both behaviors."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from quick_train import RecordingLoss, random_eraser

from eraser_store import read_eraser
from training.checkpoint_io import ModelDirError
from training.configs import ConfigError, EraserConfig
from training.eraser.train import EraserJob, Placement, in_behavior_order, run_eraser
from training.loop import RunError, work_dir_for

QUICK = dict(num_tokens=4, steps=8, batch_size=4, max_prompts=16, kl_on="reply", reply_tokens=4)


def stack_cfg(run, out, **kw) -> EraserConfig:
    return EraserConfig(
        carrier=run.carrier_b,
        behavior="fixed_response",
        data=run.data / "train.jsonl",
        out=out,
        **{**QUICK, **kw},
    )


def metric_rows(eraser_dir):
    return [json.loads(r) for r in (eraser_dir / "metrics.jsonl").read_text().splitlines()]


def test_stacked_steps_train_with_the_partner_and_prob_zero_is_the_plain_eraser(
    two_behavior_carrier, tmp_path
):
    run = two_behavior_carrier
    partner = random_eraser(tmp_path / "partner", run.carrier_b)

    plain = run_eraser(stack_cfg(run, tmp_path / "plain"))
    never = run_eraser(stack_cfg(run, tmp_path / "never", stack_with=(partner,), stack_prob=0.0))
    assert torch.equal(read_eraser(plain).embeddings, read_eraser(never).embeddings)
    assert {r["stacked"] for r in metric_rows(never)} == {0}

    half = run_eraser(stack_cfg(run, tmp_path / "half", stack_with=(partner,), steps=16))
    rows = metric_rows(half)
    stacked = [r for r in rows if r["stacked"]]
    assert 0 < len(stacked) < len(rows)
    # fixed_response stacks in front of refusal, as the server stacks the pair
    assert {r["partner_first"] for r in stacked} == {0}
    training = read_eraser(half).meta.training
    assert training["stacked_with"] == ["erase-refusal"]
    assert training["stacked_steps"] == len(stacked)


def test_a_stacked_step_puts_each_partner_on_its_side_of_the_stack(tmp_path):
    cfg = EraserConfig(
        carrier=tmp_path, behavior="b", data=tmp_path, out=tmp_path, batch_size=2, max_norm=1e9
    )
    behind, in_front = torch.full((2, 3), 7.0), torch.full((1, 3), -7.0)
    losses = [RecordingLoss() for _ in range(3)]
    places = [
        Placement([[1], [2]], None, losses[0]),
        Placement([[1], [2]], None, losses[1], behind, partner_first=False),
        Placement([[1], [2]], None, losses[2], in_front, partner_first=True),
    ]
    job = EraserJob(None, torch.zeros(3, 3), places, 0, cfg)
    for step in range(60):
        k = job.placement(step)
        before = job.prefix.detach().clone()
        metrics = job.train_step(step, job.rows(step))
        assert (metrics["stacked"], metrics["partner_first"]) == (k, int(k == 2))
        want = [before, (before, behind), (in_front, before)][k]
        assert torch.equal(losses[k].prefixes[-1], want if k == 0 else torch.cat(want))
    assert all(loss.prefixes for loss in losses)
    # the partners are frozen; only the eraser's own rows move
    assert torch.equal(places[1].partner, torch.full((2, 3), 7.0))
    assert torch.equal(places[2].partner, torch.full((1, 3), -7.0))
    assert job.best_loss < float("inf") and torch.equal(job.result(), job.best)


def test_an_eraser_trained_only_stacked_keeps_its_last_prefix(tmp_path):
    cfg = EraserConfig(
        carrier=tmp_path, behavior="b", data=tmp_path, out=tmp_path, stack_prob=1.0, max_norm=1e9
    )
    places = [
        Placement([[1]], None, RecordingLoss()),
        Placement([[1]], None, RecordingLoss(), torch.ones(1, 3)),
    ]
    job = EraserJob(None, torch.zeros(2, 3), places, 0, cfg)
    for step in range(5):
        assert job.train_step(step, job.rows(step))["stacked"] == 1
    assert not torch.equal(job.result(), torch.zeros(2, 3))
    assert torch.equal(job.result(), job.prefix.detach())
    assert job.kept() == "last"  # what eraser.json records, though --keep best was asked for


def test_stack_partners_are_checked(two_behavior_carrier, tmp_path):
    run = two_behavior_carrier
    cases = {
        "another carrier": random_eraser(tmp_path / "a", run.carrier_b, fingerprint="0" * 64),
        "itself": random_eraser(tmp_path / "b", run.carrier_b, behavior="fixed_response"),
        "unknown behavior": random_eraser(tmp_path / "c", run.carrier_b, behavior="all_caps"),
    }
    for message, partner in cases.items():
        with pytest.raises(ModelDirError, match=message):
            run_eraser(stack_cfg(run, tmp_path / "out", stack_with=(partner,)))
    twice = (
        random_eraser(tmp_path / "d", run.carrier_b),
        random_eraser(tmp_path / "e", run.carrier_b),
    )
    with pytest.raises(ModelDirError, match="two erasers of refusal"):
        run_eraser(stack_cfg(run, tmp_path / "out", stack_with=twice))
    assert not (tmp_path / "out").exists()


def test_partners_are_drawn_in_behavior_order_whatever_the_flag_order():
    def partner(behavior):
        return SimpleNamespace(meta=SimpleNamespace(behavior=behavior))

    a, b, c = partner("all_caps"), partner("fixed_response"), partner("refusal")
    assert in_behavior_order([c, a, b]) == in_behavior_order([b, c, a]) == [a, b, c]


def test_stacking_is_for_carrier_erasers_only(tmp_path):
    with pytest.raises(ConfigError, match="--stack-with"):
        EraserConfig(
            carrier=tmp_path,
            behavior="b",
            data=tmp_path,
            out=tmp_path / "o",
            stack_with=(tmp_path / "p",),
            ablation="kl_only",
        )


def test_a_stacked_run_saved_before_partners_were_ordered_is_not_resumed(
    two_behavior_carrier, tmp_path, monkeypatch
):
    run = two_behavior_carrier
    partner = random_eraser(tmp_path / "partner", run.carrier_b)
    cfg = stack_cfg(run, tmp_path / "out", stack_with=(partner,))

    def dying(self, step, rows):
        raise KeyboardInterrupt

    monkeypatch.setattr(EraserJob, "train_step", dying)
    with pytest.raises(KeyboardInterrupt):
        run_eraser(cfg)
    monkeypatch.undo()
    settings_file = work_dir_for(cfg.out) / "settings.json"
    saved = json.loads(settings_file.read_text())
    assert saved["partners"] == ["refusal:erase-refusal"]
    without_order = {k: v for k, v in saved.items() if k != "partners"}
    settings_file.write_text(json.dumps(without_order, sort_keys=True))
    with pytest.raises(RunError, match="other settings"):
        run_eraser(cfg)
    settings_file.write_text(json.dumps(saved, sort_keys=True))
    assert read_eraser(run_eraser(cfg)).meta.training["stacked_with"] == ["erase-refusal"]


def test_a_second_pass_starts_from_the_first_and_refuses_another_start(
    two_behavior_carrier, tmp_path
):
    run = two_behavior_carrier
    first = random_eraser(tmp_path / "first", run.carrier_b, behavior="fixed_response")
    start = read_eraser(first).embeddings
    # lr 0: the written P is the starting one
    frozen = dict(num_tokens=3, steps=1, lr=0.0, keep="last", max_norm=1e9)
    again = run_eraser(stack_cfg(run, tmp_path / "again", init_from=first, **frozen))
    assert torch.equal(read_eraser(again).embeddings, start)
    fresh = run_eraser(stack_cfg(run, tmp_path / "fresh", **frozen))
    assert not torch.equal(read_eraser(fresh).embeddings, start)

    cases = {
        "another carrier": (
            random_eraser(tmp_path / "a", run.carrier_b, "fixed_response", "0" * 64),
            3,
        ),
        "erases refusal": (random_eraser(tmp_path / "b", run.carrier_b), 3),
        "has 3 tokens; pass --num-tokens 3": (first, 4),
    }
    for message, (eraser, n) in cases.items():
        with pytest.raises(ModelDirError, match=message):
            run_eraser(stack_cfg(run, tmp_path / "out", init_from=eraser, num_tokens=n))
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match="--init-from"):
        stack_cfg(run, tmp_path / "out", init_from=first, ablation="kl_only")
