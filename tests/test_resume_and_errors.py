"""A killed run resumes with the same command; bad input gets a one-line error, no half output."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from training.cli import main
from training.configs import LCDDConfig, SFTConfig
from training.lcdd.train import LCDDJob, run_lcdd
from training.loop import RunError, read_metrics, run_loop, run_settings, work_dir_for
from training.sft import run_sft


@pytest.fixture(scope="module")
def sft_dir(tmp_path_factory, tiny_llama, small_data) -> Path:
    out = tmp_path_factory.mktemp("sft") / "sft"
    return run_sft(
        SFTConfig(
            base=tiny_llama,
            data=small_data / "train.jsonl",
            behavior="fixed_response",
            out=out,
            lr=1e-3,
            epochs=1,
        )
    )


def lcdd_cfg(tiny_llama, sft_dir, small_data, out, **kw) -> LCDDConfig:
    args = dict(steps=8, controller="dual", warmup=2, lambda_init=0.5, weight_lr=1e-3, save_every=3)
    return LCDDConfig(
        base=tiny_llama,
        sft=sft_dir,
        data=small_data / "train.jsonl",
        behavior="fixed_response",
        out=out,
        **{**args, **kw},
    )


@pytest.mark.parametrize(
    "group_by_length,mask_optimizer", [(False, "sgd"), (True, "sgd"), (False, "adam")]
)
def test_killed_run_resumes_to_the_same_result(
    tmp_path, tiny_llama, sft_dir, small_data, monkeypatch, group_by_length, mask_optimizer
):
    def cfg(out):
        return lcdd_cfg(
            tiny_llama,
            sft_dir,
            small_data,
            out,
            group_by_length=group_by_length,
            mask_optimizer=mask_optimizer,
        )

    straight = run_lcdd(cfg(tmp_path / "straight"))

    real_step = LCDDJob.train_step

    def dying_step(self, step, batch):
        if step == 7:
            raise KeyboardInterrupt  # as if the job were killed during step 7
        return real_step(self, step, batch)

    out = tmp_path / "resumed"
    monkeypatch.setattr(LCDDJob, "train_step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        run_lcdd(cfg(out))
    assert not out.exists()  # no output that looks complete
    assert (work_dir_for(out) / "state.pt").exists()
    monkeypatch.setattr(LCDDJob, "train_step", real_step)
    run_lcdd(cfg(out))
    assert not work_dir_for(out).exists()

    a, b = load_file(straight / "model.safetensors"), load_file(out / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = [
        json.loads(r) for r in (out / "fixed_response" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["step"] for r in rows] == list(range(8))
    straight_rows = (straight / "fixed_response" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["lambda"] for r in straight_rows] == [r["lambda"] for r in rows]


def test_adam_masks_are_learned_not_kept_from_their_init(tmp_path, tiny_llama, sft_dir, small_data):
    """The same seed and ramp: with a zero mask learning rate the kept units are the init's top
    30%; Adam on θ keeps another set, chosen by the loss gradient."""

    def channels(name, **kw):
        out = run_lcdd(
            lcdd_cfg(
                tiny_llama,
                sft_dir,
                small_data,
                tmp_path / name,
                controller="ramp",
                final_density=0.3,
                warmup=2,
                ramp_steps=4,
                steps=10,
                **kw,
            )
        )
        manifest = json.loads((out / "carrier.json").read_text())
        layers = manifest["behaviors"][-1]["channels"]
        return {(i, g, u) for i, layer in enumerate(layers) for g, us in layer.items() for u in us}

    init = channels("init", mask_lr=0.0)
    learned = channels("adam", mask_optimizer="adam", mask_lr=0.2)
    assert abs(len(learned) - len(init)) <= 0.05 * len(init)  # the same density
    assert len(init & learned) < 0.8 * len(init)


def test_unknown_mask_optimizer_is_refused(tiny_llama, sft_dir, small_data, tmp_path):
    with pytest.raises(ValueError, match="unknown mask optimizer 'rmsprop'"):
        lcdd_cfg(tiny_llama, sft_dir, small_data, tmp_path / "x", mask_optimizer="rmsprop")


@pytest.fixture(autouse=True)
def ctrl_c_handled():
    """Python's own Ctrl-C handler, as in a terminal: a suite started in the background (`cmd &`)
    inherits SIGINT ignored, which the loop rightly leaves alone."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


class StepRecorder:
    """A job whose state is the list of steps it took; Ctrl-C is pressed `presses` times inside
    step `press_at`, after its update (where a stopped step would leave a half-done state)."""

    def __init__(self, press_at: int = -1, presses: int = 0):
        self.taken, self.press_at, self.presses = [], press_at, presses

    def train_step(self, step, batch):
        self.taken.append(step)
        if step == self.press_at:
            for _ in range(self.presses):
                os.kill(os.getpid(), signal.SIGINT)
        return {"loss": float(step)}

    def state_dict(self):
        return {"taken": list(self.taken)}

    def load_state_dict(self, state):
        self.taken = list(state["taken"])


@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_inside_a_step_neither_repeats_nor_skips_it(tmp_path, presses):
    """One Ctrl-C: the step ends, then its state is saved. Two: the run stops inside the step and
    the last checkpoint (step 3) stands. Either way the resumed run took each step once."""
    work = tmp_path / ".out.partial"
    handler = signal.getsignal(signal.SIGINT)

    def run(job):
        return run_loop(job, lambda step: None, 10, work, {"job": "t"}, save_every=3)

    with pytest.raises(KeyboardInterrupt):
        run(StepRecorder(press_at=4, presses=presses))
    assert torch.load(work / "state.pt")["step"] == (5 if presses == 1 else 3)
    with (work / "metrics.jsonl").open("a") as log:
        log.write('{"step": 9, "lo')  # torn by a kill during its write
    resumed = StepRecorder()
    rows = run(resumed)
    assert resumed.taken == list(range(10))
    assert (
        [r["step"] for r in rows]
        == list(range(10))
        == [r["step"] for r in read_metrics(work / "metrics.jsonl")]
    )
    assert signal.getsignal(signal.SIGINT) is handler  # restored


def test_an_ignored_ctrl_c_stays_ignored(tmp_path):
    """A job started with SIGINT ignored (`cmd &` in a script) is not stopped by it."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        job = StepRecorder(press_at=2, presses=2)
        run_loop(job, lambda step: None, 5, tmp_path / "w", {"job": "t"}, save_every=3)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
    assert job.taken == list(range(5))


def test_resume_on_regenerated_data_is_refused(tmp_path):
    """Settings name the data file by path; its content is checked too."""

    @dataclasses.dataclass
    class Settings:
        data: Path

    data, work = tmp_path / "train.jsonl", tmp_path / ".out.partial"
    data.write_text('{"first": "version"}\n')
    with pytest.raises(KeyboardInterrupt):
        run_loop(StepRecorder(1, 1), lambda s: None, 5, work, run_settings("t", Settings(data)))
    data.write_text('{"second": "version"}\n')
    with pytest.raises(RunError, match="other settings"):
        run_loop(StepRecorder(), lambda s: None, 5, work, run_settings("t", Settings(data)))


def test_ctrl_c_in_the_last_step_stops_and_a_rerun_only_finishes(tmp_path):
    """Ctrl-C always stops (so a script around the job stops too); a rerun takes no step."""
    work = tmp_path / "w"
    job = StepRecorder(press_at=9, presses=1)
    with pytest.raises(KeyboardInterrupt):
        run_loop(job, lambda step: None, 10, work, {"job": "t"}, save_every=3)
    assert torch.load(work / "state.pt")["step"] == 10
    resumed = StepRecorder()
    rows = run_loop(resumed, lambda step: None, 10, work, {"job": "t"}, save_every=3)
    assert resumed.taken == list(range(10)) and len(rows) == 10


def test_resume_with_other_settings_is_refused(
    tmp_path, tiny_llama, sft_dir, small_data, monkeypatch
):
    out = tmp_path / "c"

    def dying_step(self, step, batch):
        raise KeyboardInterrupt

    monkeypatch.setattr(LCDDJob, "train_step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        run_lcdd(lcdd_cfg(tiny_llama, sft_dir, small_data, out))
    monkeypatch.undo()
    with pytest.raises(RunError, match="other settings"):
        run_lcdd(lcdd_cfg(tiny_llama, sft_dir, small_data, out, mask_lr=0.5))


def run_cli(capsys, *argv) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    return code, err


def carrier_args(tiny_llama, sft_dir, data, out, behavior="fixed_response"):
    return [
        "train",
        "carrier",
        "--base",
        tiny_llama,
        "--sft",
        sft_dir,
        "--data",
        data,
        "--behavior",
        behavior,
        "--out",
        out,
        "--steps",
        "2",
        "--warmup",
        "1",
    ]


def test_cli_errors_are_one_line(tmp_path, capsys, tiny_llama, sft_dir, small_data):
    train = small_data / "train.jsonl"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "hi", "completion": "yo", "behavior": "x"}\n{"prompt": "hi"\n')
    no_behavior = tmp_path / "nob.jsonl"
    no_behavior.write_text('{"prompt": "hi", "completion": "yo"}\n')
    cases = [
        (
            carrier_args(tiny_llama, sft_dir, tmp_path / "missing.jsonl", tmp_path / "o1"),
            "missing.jsonl",
        ),
        (carrier_args(tiny_llama, sft_dir, bad, tmp_path / "o2"), "bad.jsonl:2"),
        (carrier_args(tiny_llama, sft_dir, no_behavior, tmp_path / "o3"), "nob.jsonl:1"),
        (
            carrier_args(tiny_llama, sft_dir, train, tmp_path / "o4", behavior="nope"),
            "no rows for behavior 'nope'",
        ),
        (
            carrier_args(tiny_llama, tmp_path / "nosft", train, tmp_path / "o5"),
            "not a model directory",
        ),
        (
            carrier_args(tiny_llama, sft_dir, train, tmp_path / "o6") + ["--controller", "pid"],
            "unknown controller",
        ),
        (
            carrier_args(tiny_llama, sft_dir, train, tmp_path / "o8", behavior="refusal"),
            "was fine-tuned for 'fixed_response', not --behavior 'refusal'",
        ),
        (
            [
                "train",
                "sft",
                "--base",
                tmp_path / "nobase",
                "--data",
                train,
                "--behavior",
                "fixed_response",
                "--out",
                tmp_path / "o7",
            ],
            "not a model directory",
        ),
    ]
    for argv, needle in cases:
        code, err = run_cli(capsys, *argv)
        assert code == 2, argv
        errors = [line for line in err.splitlines() if line.startswith("sft-eraser: error:")]
        assert len(errors) == 1 and needle in errors[0], err
        assert "Traceback" not in err
    assert not any(p.name.startswith("o") for p in tmp_path.iterdir())


def test_carrier_base_mismatch_is_refused(tmp_path, capsys, sft_dir, small_data):
    other = tmp_path / "other_base"
    assert main(["model", "tiny", "--family", "llama", "--seed", "7", "--out", str(other)]) == 0
    code, err = run_cli(
        capsys, *carrier_args(other, sft_dir, small_data / "train.jsonl", tmp_path / "c")
    )
    assert code == 2 and "carrier/base mismatch" in err
    assert not (tmp_path / "c").exists()


def test_unsupported_architecture_names_it(tmp_path, capsys, small_data):
    from transformers import OPTConfig, OPTForCausalLM

    from training.models.tiny import byte_tokenizer

    tok = byte_tokenizer()
    model = OPTForCausalLM(
        OPTConfig(
            vocab_size=len(tok),
            hidden_size=32,
            num_hidden_layers=1,
            ffn_dim=64,
            num_attention_heads=2,
            word_embed_proj_dim=32,
        )
    )
    model.save_pretrained(tmp_path / "opt")
    tok.save_pretrained(tmp_path / "opt")
    code, err = run_cli(
        capsys,
        "train",
        "sft",
        "--base",
        tmp_path / "opt",
        "--data",
        small_data / "train.jsonl",
        "--behavior",
        "fixed_response",
        "--out",
        tmp_path / "o",
    )
    assert (
        code == 2 and "unsupported architecture OPTForCausalLM" in err and "model_type='opt'" in err
    )


def test_existing_output_and_repeated_behavior_are_refused(
    tmp_path, capsys, tiny_llama, sft_dir, small_data
):
    train = small_data / "train.jsonl"
    carrier = tmp_path / "carrier"
    assert main([str(a) for a in carrier_args(tiny_llama, sft_dir, train, carrier)]) == 0
    capsys.readouterr()
    code, err = run_cli(capsys, *carrier_args(tiny_llama, sft_dir, train, carrier))
    assert code == 2 and "already exists" in err
    code, err = run_cli(
        capsys,
        "train",
        "sft",
        "--base",
        carrier,
        "--data",
        train,
        "--behavior",
        "fixed_response",
        "--out",
        tmp_path / "again",
    )
    assert code == 2 and "already holds behavior 'fixed_response'" in err
