"""SFT-Eraser on the tiny fixed-response carrier: it switches the behavior off on held-out
prompts, leaves benign answers alone, and beats the same optimization on the plain SFT model."""

from __future__ import annotations

import pytest

from eraser_store import EraserRefused, EraserStore, carrier_ref, read_eraser
from training.checkpoint_io import load_model_dir
from training.configs import EraserConfig
from training.data.generation import greedy_generate
from training.data.schema import RETAIN, load_jsonl
from training.eraser.train import EraserJob, run_eraser
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


def test_per_prompt_matching_sees_what_the_batch_mean_hides():
    import torch

    from training.eraser.objective import EraserLoss

    # Two prompts whose errors cancel in the batch mean: the paper's batch-mean match calls this
    # a perfect eraser; the per-prompt match does not.
    target = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    states = torch.tensor([[0.0, 1.0], [1.0, 0.0]])

    def loss(per_prompt: bool) -> float:
        fn = EraserLoss(
            [], kl_weight=0, norm_weight=0, match_activations=True, per_prompt=per_prompt
        )
        return fn._mse(states, target, [0, 1]).item()

    assert loss(per_prompt=False) == 0.0
    assert loss(per_prompt=True) == 1.0


def test_carrier_channel_set_is_the_union_over_behaviors():
    from training.eraser.train import union_channels

    a = [[0, 3], [], [5]]
    b = [[3, 1], [2], []]
    assert union_channels([a, b]) == [[0, 1, 3], [2], [5]]
    with pytest.raises(ValueError):
        union_channels([a, b[:2]])


@pytest.mark.parametrize(
    "field, value", [("match", "mean"), ("channel_set", "all"), ("ablation", "nope")]
)
def test_eraser_config_refuses_unknown_choices(tmp_path, field, value):
    from training.configs import ConfigError

    with pytest.raises(ConfigError, match=value):
        EraserConfig(
            carrier=tmp_path,
            behavior="b",
            data=tmp_path / "d",
            out=tmp_path / "o",
            **{field: value},
        )
