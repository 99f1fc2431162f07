"""The command line end to end on a tiny model: model tiny, data make, train sft/carrier, eval."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from pathlib import Path

import pytest

from server.cli import add_command as add_serve
from sft_eraser.cli import main as sft_eraser_main
from training.argparse_dataclass import dataclass_from_args
from training.cli import build_parser, main
from training.configs import EraserConfig, LCDDConfig, SFTConfig


def test_cli_pipeline(tmp_path, capsys):
    model, data = tmp_path / "tiny", tmp_path / "data"
    assert main(["model", "tiny", "--family", "qwen2", "--out", str(model)]) == 0
    argv = [
        "data",
        "make",
        "--model",
        str(model),
        "--out",
        str(data),
        "--behaviors",
        "fixed_response",
        "--n-train",
        "16",
        "--n-dev",
        "4",
        "--n-test",
        "8",
        "--n-benign-train",
        "16",
        "--n-benign-dev",
        "4",
        "--n-benign-test",
        "8",
        "--max-new-tokens",
        "8",
    ]
    assert main(argv) == 0
    meta = json.loads((data / "meta.json").read_text())
    assert meta["counts"]["test"]["fixed_response"] == 8
    assert meta["counts"]["dev"] == {"fixed_response": 4, "retain": 4}
    common = ["--data", str(data / "train.jsonl"), "--behavior", "fixed_response"]
    assert (
        main(
            [
                "train",
                "sft",
                "--base",
                str(model),
                *common,
                "--out",
                str(tmp_path / "sft"),
                "--epochs",
                "1",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "train",
                "carrier",
                "--base",
                str(model),
                "--sft",
                str(tmp_path / "sft"),
                *common,
                "--out",
                str(tmp_path / "carrier"),
                "--steps",
                "3",
                "--warmup",
                "1",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert (
        main(
            [
                "eval",
                "behavior",
                "--model",
                str(tmp_path / "carrier"),
                "--data",
                str(data / "test.jsonl"),
                "--behavior",
                "fixed_response",
                "--without",
                "fixed_response",
                "--max-new-tokens",
                "4",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["n_triggering"] == 8 and 0.0 <= report["rate"] <= 1.0


def test_carrier_flags_come_from_the_config_with_paper_defaults():
    args = build_parser().parse_args(
        [
            "train",
            "carrier",
            "--base",
            "b",
            "--sft",
            "s",
            "--data",
            "d",
            "--behavior",
            "x",
            "--out",
            "o",
        ]
    )
    defaults = LCDDConfig(base="b", sft="s", data="d", behavior="x", out="o")
    for name in (
        "warmup",
        "budget_ratio",
        "lambda_init",
        "lambda_lr",
        "lambda_max",
        "mask_lr",
        "weight_lr",
        "ema_decay",
        "controller",
        "epochs",
        "init_mean",
        "init_std",
    ):
        assert getattr(args, name) == getattr(defaults, name)
    assert (args.warmup, args.budget_ratio, args.lambda_init, args.lambda_lr, args.mask_lr) == (
        300,
        0.3,
        0.01,
        0.1,
        0.1,
    )


def demo_flag_arrays(schedule: str) -> dict[str, list[str]]:
    """The stage flags `scripts/demo.sh` passes under SCHEDULE=`schedule`, read by bash from the
    script itself."""
    text = (Path(__file__).parents[1] / "scripts" / "demo.sh").read_text()
    settings = text[text.index("BEHAVIORS=(") : text.index("CARRIER_SETTINGS=")]
    names = (
        "DATA_ARGS",
        "SFT_ARGS",
        "LCDD_ARGS",
        "ERASER_ARGS",
        "LAST_ERASER_ARGS",
        "SECOND_PASS_ARGS",
    )
    show = "".join(f'printf "%s\\0" {n} "${{{n}[@]}}" ""; ' for n in names)
    out = subprocess.run(
        ["bash", "-c", settings + show],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "SCHEDULE": schedule},
    )
    fields = out.stdout.split("\0")
    arrays, i = {}, 0
    while i < len(fields) - 1:
        end = fields.index("", i + 1)
        arrays[fields[i]] = fields[i + 1 : end]
        i = end + 1
    assert set(arrays) == set(names)
    return arrays


@pytest.mark.parametrize("schedule", ["full", "quick"])
def test_the_demo_flags_are_valid_settings(schedule):
    # The demo runs for an hour: a flag renamed in a config must fail here, not 40 minutes in.
    arrays = demo_flag_arrays(schedule)
    if schedule == "quick":  # the schedule's own flags, not the full one's
        assert arrays["LCDD_ARGS"] != demo_flag_arrays("full")["LCDD_ARGS"]
    need = ["--data", "d", "--behavior", "x", "--out", "o"]
    commands = {
        "SFT_ARGS": (["train", "sft", "--base", "b", *need], SFTConfig),
        "LCDD_ARGS": (["train", "carrier", "--base", "b", "--sft", "s", *need], LCDDConfig),
        "ERASER_ARGS": (["train", "eraser", "--carrier", "c", *need], EraserConfig),
    }
    arrays["LAST_ERASER_ARGS"] = arrays["ERASER_ARGS"] + arrays["LAST_ERASER_ARGS"]
    arrays["SECOND_PASS_ARGS"] = [
        *arrays["ERASER_ARGS"],
        *arrays["SECOND_PASS_ARGS"],
        "--init-from",
        "e",
    ]
    for name in ("LAST_ERASER_ARGS", "SECOND_PASS_ARGS"):
        commands[name] = commands["ERASER_ARGS"]
    for name, (command, config) in commands.items():
        dataclass_from_args(config, build_parser().parse_args(command + arrays[name]))
    data = ["data", "make", "--model", "m", "--out", "o", "--behaviors", "x"]
    build_parser().parse_args(data + arrays["DATA_ARGS"])


def run_demo_until_first_stage(work: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    """scripts/demo.sh with a stand-in `sft-eraser` that fails (exit 3) wherever a stage starts."""
    stub = tmp_path / "bin" / "sft-eraser"
    stub.parent.mkdir(exist_ok=True)
    stub.write_text("#!/bin/sh\nexit 3\n")
    stub.chmod(0o755)
    script = Path(__file__).parents[1] / "scripts" / "demo.sh"
    env = {
        **os.environ,
        "WORK": str(work),
        "SETUP": "0",
        "PATH": f"{stub.parent}:{os.environ['PATH']}",
    }
    return subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env)


def test_the_demo_keeps_carriers_whose_erasers_had_other_settings(tmp_path):
    work = tmp_path / "demo"
    first = run_demo_until_first_stage(work, tmp_path)  # a fresh directory: writes its settings
    assert first.returncode == 3, first.stderr
    settings = (work / "settings.txt").read_text().strip()
    carriers, erasers = settings.split(" | --steps", 1)

    (work / "eraser_refusal").mkdir()
    (work / "settings.txt").write_text(f"{carriers} | older eraser settings\n")
    refused = run_demo_until_first_stage(work, tmp_path)
    assert refused.returncode == 2 and "older eraser settings" in refused.stderr
    assert f"rm -rf {work}/eraser_*" in refused.stderr
    (work / "eraser_refusal").rmdir()
    kept = run_demo_until_first_stage(work, tmp_path)
    assert kept.returncode == 3, kept.stderr
    assert (work / "settings.txt").read_text().strip() == settings

    (work / "settings.txt").write_text(f"other data | {erasers}\n")
    other = run_demo_until_first_stage(work, tmp_path)
    assert other.returncode == 2 and "built with other settings" in other.stderr


def test_stack_with_takes_several_eraser_dirs():
    command = ["train", "eraser", "--carrier", "c", "--behavior", "b", "--data", "d", "--out", "o"]
    plain = dataclass_from_args(EraserConfig, build_parser().parse_args(command))
    assert plain.stack_with == ()
    args = build_parser().parse_args([*command, "--stack-with", "e1", "e2", "--stack-prob", "0.25"])
    cfg = dataclass_from_args(EraserConfig, args)
    assert cfg.stack_with == (Path("e1"), Path("e2"))
    assert cfg.stack_prob == 0.25


def test_abbreviated_flags_are_refused(capsys):
    command = ["train", "eraser", "--carrier", "c", "--behavior", "b", "--data", "d", "--out", "o"]
    with pytest.raises(SystemExit):
        build_parser().parse_args([*command, "--retain"])
    assert "unrecognized arguments: --retain" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        sft_eraser_main(["serve", "--carr", "c"])
    assert "--carr" in capsys.readouterr().err


def test_every_command_prints_its_help():
    """`--help` of every command and subcommand formats (argparse %-formats the field docs)."""

    def walk(parser, name):
        yield name, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub, child in action.choices.items():
                    yield from walk(child, f"{name} {sub}")

    commands = dict(walk(build_parser(extra_commands=[add_serve]), "sft-eraser"))
    assert {"sft-eraser train carrier", "sft-eraser train eraser", "sft-eraser serve"} <= set(
        commands
    )
    for name, parser in commands.items():
        assert parser.format_help().startswith("usage: "), name
