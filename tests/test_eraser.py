"""SFT-Eraser on the tiny fixed-response carrier: it switches the behavior off on held-out
prompts, leaves benign answers alone, and beats the same optimization on the plain SFT model."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
import torch
from quick_train import RecordingLoss

from eraser_store import EraserRefused, EraserStore, carrier_ref, read_eraser
from training.checkpoint_io import load_model_dir
from training.configs import EraserConfig
from training.data.generation import greedy_generate
from training.data.schema import RETAIN, load_jsonl
from training.eraser.train import EraserJob, Placement, run_eraser
from training.loop import work_dir_for

# A short, weak eraser (4 tokens, 30 steps): the tiny model is small enough that a long one
# switches off even the plain SFT model's behavior, which hides the contrast the test is about.
SHORT = dict(num_tokens=4, steps=30)


def eraser_cfg(run, out, **kw) -> EraserConfig:
    return EraserConfig(
        carrier=run.carrier,
        behavior="fixed_response",
        data=run.data / "train.jsonl",
        out=out,
        **{**SHORT, **kw},
    )


@pytest.fixture(scope="module")
def erasers(fixed_response_carrier, tmp_path_factory):
    run = fixed_response_carrier
    root = tmp_path_factory.mktemp("erasers")
    return {
        "carrier": run_eraser(eraser_cfg(run, root / "carrier")),
        "plain_sft": run_eraser(
            eraser_cfg(run, root / "plain_sft", ablation="plain_sft", sft_model=run.sft)
        ),
    }


def rates(model_dir, eraser_dir, test):
    from training.evaluate import rate_report

    model, tok = load_model_dir(model_dir, device="cpu")
    prefix = read_eraser(eraser_dir).embeddings if eraser_dir else None
    return rate_report(model, tok, test, "fixed_response", max_new_tokens=16, prefix=prefix)


def test_eraser_switches_the_behavior_off(fixed_response_carrier, erasers):
    run = fixed_response_carrier
    test = load_jsonl(run.data / "test.jsonl")
    before = rates(run.carrier, None, test)
    after = rates(run.carrier, erasers["carrier"], test)
    assert before["rate"] >= 0.9
    assert after["rate"] <= before["rate"] / 2, after
    assert after["false_trigger"] <= 0.1

    # benign prompts: the greedy answers with the eraser are (mostly) the carrier's own
    model, tok = load_model_dir(run.carrier, device="cpu")
    benign = [e.messages for e in test if e.behavior == RETAIN]
    plain = greedy_generate(model, tok, benign, 16)
    erased = greedy_generate(
        model, tok, benign, 16, prefix=read_eraser(erasers["carrier"]).embeddings
    )
    same = sum(a == b for a, b in zip(plain, erased, strict=True)) / len(benign)
    assert same >= 0.8, list(zip(plain, erased, strict=True))[:5]


def test_plain_sft_ablation_reverses_less(fixed_response_carrier, erasers):
    run = fixed_response_carrier
    test = load_jsonl(run.data / "test.jsonl")
    carrier_after = rates(run.carrier, erasers["carrier"], test)["rate"]
    sft_before = rates(run.sft, None, test)["rate"]
    sft_after = rates(run.sft, erasers["plain_sft"], test)["rate"]
    assert sft_before >= 0.9
    assert sft_after >= carrier_after + 0.1, (sft_after, carrier_after)


def test_eraser_file_and_store(fixed_response_carrier, erasers, tmp_path):
    run = fixed_response_carrier
    eraser = read_eraser(erasers["carrier"])
    assert eraser.embeddings.shape == (4, 128)
    assert eraser.meta.behavior == "fixed_response" and eraser.meta.name == "erase-fixed_response"
    assert eraser.meta.training["ablation"] == "none" and eraser.meta.training["steps"] == 30
    # rows were projected to the norm bound
    assert eraser.embeddings.norm(dim=-1).max() <= eraser.meta.training["max_norm"] + 1e-5
    assert (erasers["carrier"] / "metrics.jsonl").is_file() and (
        erasers["carrier"] / "loss.png"
    ).is_file()

    store = EraserStore(tmp_path / "store", carrier=carrier_ref(run.carrier))
    record = store.add(erasers["carrier"])
    assert (record.name, record.version) == ("erase-fixed_response", 1)
    # the plain-SFT ablation was optimized on another model: refused by the carrier's store
    with pytest.raises(EraserRefused):
        store.add(erasers["plain_sft"])
    config = json.loads((erasers["plain_sft"] / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(run.sft)  # the model it applies to


@pytest.mark.parametrize("ablation", ["random_channels", "kl_only"])
def test_other_ablations_run(fixed_response_carrier, tmp_path, ablation):
    out = run_eraser(
        eraser_cfg(fixed_response_carrier, tmp_path / ablation, ablation=ablation, steps=3)
    )
    meta = read_eraser(out).meta
    assert meta.training["ablation"] == ablation
    assert (meta.channel_count == 0) == (ablation == "kl_only")


def test_eraser_run_resumes(fixed_response_carrier, tmp_path, monkeypatch):
    run = fixed_response_carrier
    straight = read_eraser(run_eraser(eraser_cfg(run, tmp_path / "a", steps=6, save_every=2)))
    real_step = EraserJob.train_step

    def dying(self, step, rows):
        if step == 5:
            raise KeyboardInterrupt
        return real_step(self, step, rows)

    monkeypatch.setattr(EraserJob, "train_step", dying)
    with pytest.raises(KeyboardInterrupt):
        run_eraser(eraser_cfg(run, tmp_path / "b", steps=6, save_every=2))
    assert (work_dir_for(tmp_path / "b") / "state.pt").exists()
    monkeypatch.setattr(EraserJob, "train_step", real_step)
    resumed = read_eraser(run_eraser(eraser_cfg(run, tmp_path / "b", steps=6, save_every=2)))
    assert resumed.embeddings.equal(straight.embeddings)


def job_on_a_bowl(tmp_path, **kw) -> EraserJob:
    """An EraserJob on a quadratic loss (no model, minimum at P = 0.5): enough to watch the
    optimizer."""
    cfg = EraserConfig(
        carrier=tmp_path, behavior="b", data=tmp_path, out=tmp_path, max_norm=1e9, lr=0.1, **kw
    )
    alone = Placement([[1], [2]], None, RecordingLoss())
    return EraserJob(None, torch.zeros(2, 3), [alone], 0, cfg)


def test_lr_decay_falls_linearly_over_the_last_steps_and_reaches_the_optimizer(tmp_path):
    decayed, constant = job_on_a_bowl(tmp_path, steps=10, lr_decay=0.4), job_on_a_bowl(tmp_path)
    lrs = []
    for step in range(10):
        lrs.append(decayed.train_step(step, decayed.rows(step))["lr"])
        assert constant.train_step(step, constant.rows(step))["lr"] == 0.1
        # the same path while the lr is the same, a shorter one once it falls
        same = torch.equal(decayed.prefix, constant.prefix)
        assert same == (step < 7)
    assert lrs == pytest.approx([0.1] * 7 + [0.075, 0.05, 0.025])


@pytest.mark.parametrize("keep", ["best", "last"])
def test_keep_picks_the_lowest_loss_or_the_last_prefix(tmp_path, keep):
    job = job_on_a_bowl(tmp_path, steps=5, keep=keep)
    for step in range(5):
        job.train_step(step, job.rows(step))
    # Each step moves P towards 1 and the loss is measured before the step: best lags last by one.
    assert not torch.equal(job.best, job.prefix.detach())
    assert torch.equal(job.result(), job.best if keep == "best" else job.prefix.detach())
    assert job.kept() == keep


def test_per_prompt_matching_sees_what_the_batch_mean_hides():
    import torch

    from training.eraser.objective import mse

    # Two prompts whose errors cancel in the batch mean: the paper's batch-mean match calls this
    # a perfect eraser; the per-prompt match does not.
    target = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    states = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    assert mse(states, target, [0, 1], per_prompt=False) == 0.0
    assert mse(states, target, [0, 1], per_prompt=True) == 1.0


def test_carrier_channel_set_is_the_union_over_behaviors():
    from training.eraser.train import union_channels

    a = [[0, 3], [], [5]]
    b = [[3, 1], [2], []]
    assert union_channels([a, b]) == [[0, 1, 3], [2], [5]]
    with pytest.raises(ValueError):
        union_channels([a, b[:2]])


def test_held_channels_are_the_other_behaviors_minus_the_matched_ones():
    from training.eraser.train import other_behaviors_channels

    manifest = {
        "behaviors": [
            {"name": "a", "eraser_channels": [[0, 3], [1]]},
            {"name": "b", "eraser_channels": [[3, 4], [2]]},
            {"name": "c", "eraser_channels": [[5], []]},
        ]
    }
    assert other_behaviors_channels(manifest, "a", [[0, 3], [1]]) == [[4, 5], [2]]
    only = {"behaviors": manifest["behaviors"][:1]}
    assert other_behaviors_channels(only, "a", [[0, 3], [1]]) == [[], []]


def test_retain_others_shares_the_retain_half_with_the_other_behaviors(tmp_path):
    from training.data.schema import Example, write_jsonl
    from training.eraser.train import pick_prompts

    def rows(behavior, n, copies=1):
        user = [{"role": "user", "content": f"{behavior} {i}"} for i in range(n)]
        return [Example((m,), "r", behavior) for m in user for _ in range(copies)]

    data = write_jsonl(
        tmp_path / "train.jsonl",
        rows("a", 20, copies=2) + rows(RETAIN, 2) + rows("b", 20) + rows("c", 20),
    )

    def counts(**kw):
        picked = pick_prompts(data, "a", 24, seed=1, **kw)
        assert all(m[-1]["content"].split()[0] == group for group, m in picked)
        groups = [group for group, _ in picked]
        return {b: groups.count(b) for b in ("a", RETAIN, "b", "c")}

    # The paper's split: half benign (only 2 rows here), the behavior's prompts fill the rest, each
    # prompt once.
    assert counts() == {"a": 20, RETAIN: 2, "b": 0, "c": 0}
    # Benign has 2 rows for its share of 12 / 3: the other behaviors take what it leaves.
    assert counts(others=("b", "c")) == {"a": 12, RETAIN: 2, "b": 5, "c": 5}
    # Only the behaviors named (the carrier's): rows of one it does not hold stay out.
    assert counts(others=("b",)) == {"a": 12, RETAIN: 2, "b": 10, "c": 0}


def test_equal_shares_give_a_small_groups_unused_share_to_the_others():
    from training.eraser.train import equal_shares

    assert equal_shares([80, 100, 100], 100) == [34, 33, 33]
    assert equal_shares([10, 100, 100], 100) == [10, 45, 45]
    assert equal_shares([0, 5], 100) == [0, 5]
    assert equal_shares([80], 40) == [40]


@pytest.mark.parametrize(
    "field, value",
    [
        ("match", "mean"),
        ("channel_set", "all"),
        ("ablation", "nope"),
        ("kl_on", "end"),
        ("kl_weight", -1.0),
        ("norm_weight", -0.5),
        ("stack_prob", 1.5),
        ("others_reference", "base"),
        ("keep", "lowest"),
        ("lr_decay", 1.5),
    ],
)
def test_eraser_config_refuses_bad_values(tmp_path, field, value):
    from training.configs import ConfigError

    with pytest.raises(ConfigError, match=re.escape(str(value))):
        EraserConfig(
            carrier=tmp_path,
            behavior="b",
            data=tmp_path / "d",
            out=tmp_path / "o",
            **{field: value},
        )


def reply_stats(run, reply_tokens=6):
    from eraser_store.prompting import chat_prompt_ids
    from training.carrier import load_without
    from training.eraser.objective import generated_target_stats
    from training.eraser.train import pick_prompts

    target, tok = load_without(run.carrier, "fixed_response", device="cpu")
    prompts = pick_prompts(run.data / "train.jsonl", "fixed_response", 8, seed=0)
    encoded = [chat_prompt_ids(tok, m) for _, m in prompts]
    rows, stats = generated_target_stats(target, tok, encoded, reply_tokens, batch_size=3)
    return target, tok, encoded, rows, stats


def test_others_reference_carrier_needs_the_other_behaviors_prompts(tmp_path):
    from training.configs import ConfigError

    paths = dict(carrier=tmp_path, behavior="b", data=tmp_path / "d", out=tmp_path / "o")
    with pytest.raises(ConfigError, match="--retain-others"):
        EraserConfig(**paths, others_reference="carrier")
    EraserConfig(**paths, others_reference="carrier", retain_others=True)


@pytest.mark.parametrize("kl_on", ["prompt", "reply"])
def test_others_reference_carrier_matches_other_behaviors_prompts_to_the_carrier(
    two_behavior_carrier, kl_on
):
    """Erasing fixed_response with --others-reference carrier: refusal's prompts get the
    carrier's own replies and statistics, the rest the target's (carrier without fixed_response),
    each exactly as if that model were the only reference."""
    from eraser_store.prompting import chat_prompt_ids
    from training.carrier import load_without, read_manifest
    from training.eraser.train import build_placement, pick_prompts, reference_stats

    run = two_behavior_carrier
    cfg = EraserConfig(
        carrier=run.carrier_b,
        behavior="fixed_response",
        data=run.data / "train.jsonl",
        out=run.carrier_b / "unused",
        retain_others=True,
        kl_on=kl_on,
        reply_tokens=4,
        batch_size=4,
        device="cpu",
    )
    model, tok = load_model_dir(run.carrier_b, device="cpu")
    target, _ = load_without(run.carrier_b, "fixed_response", device="cpu")
    picked = pick_prompts(cfg.data, cfg.behavior, 16, 0, ("refusal",))
    prompts = [(g, chat_prompt_ids(tok, m)) for g, m in picked]
    manifest, hidden = read_manifest(run.carrier_b), model.config.hidden_size
    channels = [[] for _ in range(model.config.num_hidden_layers)]

    c = dataclasses.replace(cfg, others_reference="carrier")
    mixed = build_placement(c, manifest, prompts, ("fixed_response",), channels, hidden, model)
    on_model = [i for i, (g, _) in enumerate(prompts) if g == "refusal"]
    on_target = [i for i, (g, _) in enumerate(prompts) if g != "refusal"]
    assert on_model and on_target

    def alone(ref, index):
        return reference_stats(cfg, [ref] * len(index), [prompts[i][1] for i in index], tok)

    for index, ref in ((on_model, model), (on_target, target)):
        rows, stats = alone(ref, index)
        for j, i in enumerate(index):
            assert mixed.encoded[i] == rows[j]
            assert torch.equal(mixed.stats.kl_mask[i], stats.kl_mask[j])
            assert torch.allclose(mixed.stats.log_probs[i], stats.log_probs[j], atol=1e-4)
            for a, b in zip(mixed.stats.states, stats.states, strict=True):
                assert torch.allclose(a[i], b[j], atol=1e-4)
    # the two references differ there, so the rows above did come from the carrier
    _, wrong = alone(target, on_model)
    assert not torch.allclose(mixed.stats.states[-1][on_model], wrong.states[-1], atol=1e-4)


def test_target_replies_are_padded_and_masked(fixed_response_carrier):
    target, tok, encoded, rows, stats = reply_stats(fixed_response_carrier)
    for prompt, row, counted in zip(encoded, rows, stats.kl_mask, strict=True):
        reply = row[len(prompt) :]
        assert len(reply) == 6 and row[: len(prompt)] == prompt
        n = int(counted.sum())
        assert counted.tolist() == [1.0] * n + [0.0] * (6 - n)  # the reply, then padding
        assert reply[n:] == [tok.pad_token_id] * (6 - n)
        assert n == 6 or reply[n - 1] == tok.eos_token_id


def test_generated_stats_equal_a_teacher_forced_pass(fixed_response_carrier):
    """The statistics read off the generation (prefill states, each step's logits) are those of
    a forward pass over prompt + reply: the eraser is matched to the same target either way."""
    from training.data.generation import left_pad
    from training.eraser.objective import target_stats

    target, tok, _, rows, stats = reply_stats(fixed_response_carrier)
    forced = target_stats(target, [left_pad(rows, tok.pad_token_id)], stats.kl_mask, 6)
    counted = stats.kl_mask.bool()
    assert counted.sum() > len(rows)  # replies longer than one token were compared
    assert torch.allclose(stats.log_probs[counted], forced.log_probs[counted], atol=1e-4)
    for generated, teacher_forced in zip(stats.states, forced.states, strict=True):
        assert torch.allclose(generated, teacher_forced, atol=1e-4)


def test_reply_kl_positions_predict_the_target_reply(fixed_response_carrier):
    _, _, encoded, rows, stats = reply_stats(fixed_response_carrier)
    # Teacher-forced on its own greedy reply, the target's argmax at each counted KL position is
    # the next reply token: the window is aligned with the reply, not shifted by one.
    predicted = stats.log_probs.argmax(-1)
    for i, (prompt, row) in enumerate(zip(encoded, rows, strict=True)):
        counted = int(stats.kl_mask[i].sum())
        assert predicted[i, :counted].tolist() == row[len(prompt) :][:counted]


@pytest.mark.parametrize("kl_on", ["prompt", "reply"])
def test_kl_logits_are_the_same_when_only_the_last_positions_are_projected(
    fixed_response_carrier, kl_on
):
    import torch

    from training.data.generation import left_pad
    from training.eraser.objective import TargetStats, forward

    target, tok, encoded, rows, stats = reply_stats(fixed_response_carrier)
    if kl_on == "prompt":  # the last 8 prompt positions
        rows, stats = encoded, TargetStats([], torch.empty(0), torch.ones(len(encoded), 8), 0)
    ids, mask = left_pad(rows, tok.pad_token_id)
    prefix = torch.randn(3, target.config.hidden_size) * 0.1
    full, states = forward(target, ids, mask, prefix, stats.state_index)
    kept, kept_states = forward(target, ids, mask, prefix, stats.state_index, stats.logits_to_keep)
    assert kept.shape[1] == stats.logits_to_keep < full.shape[1]
    assert torch.allclose(stats.kl_logits(kept), stats.kl_logits(full), atol=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(states, kept_states, strict=True))


def test_reply_kl_ignores_masked_positions(fixed_response_carrier):
    import torch

    from training.data.generation import left_pad
    from training.eraser.objective import EraserLoss

    target, tok, _, rows, stats = reply_stats(fixed_response_carrier)
    loss_fn = EraserLoss([], kl_weight=1, norm_weight=0, match_activations=False, per_prompt=False)
    prefix = torch.randn(3, target.config.hidden_size) * 0.1
    every_row = list(range(len(rows)))

    def kl(batch_rows):
        ids, mask = left_pad(batch_rows, tok.pad_token_id)
        return loss_fn(target, prefix, ids, mask, stats, every_row)["kl"]

    # As if the first rows' replies were one token shorter: the last KL position (the logits that
    # read the second-to-last reply token) no longer counts, so changing that token changes nothing.
    stats.kl_mask[:4, -1] = 0
    changed = [list(r) for r in rows]
    for row in changed[:4]:
        row[-2] = (row[-2] + 7) % tok.vocab_size
    assert torch.allclose(kl(rows), kl(changed), atol=1e-6)
    changed[5][-2] = (changed[5][-2] + 7) % tok.vocab_size
    assert not torch.allclose(kl(rows), kl(changed), atol=1e-6)
    assert kl(rows) > 0  # the prefix moves the model away from its own distribution


def test_reply_kl_eraser_run(fixed_response_carrier, tmp_path):
    cfg = eraser_cfg(fixed_response_carrier, tmp_path / "e", steps=3, kl_on="reply", reply_tokens=5)
    training = read_eraser(run_eraser(dataclasses.replace(cfg, hold_others=True))).meta.training
    assert training["kl_positions"] == 5 and training["config"]["kl_on"] == "reply"
    # a one-behavior carrier has no other behavior to hold
    assert training["final"]["hold"] == 0 and training["final"]["act"] > 0
