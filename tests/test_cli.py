"""The command line end to end on a tiny model: model tiny, data make, train sft/carrier, eval."""

from __future__ import annotations

import argparse
import json
import re
import sys
import tomllib
from pathlib import Path

import pytest

from server.cli import add_command as add_serve
from sft_eraser.cli import main as sft_eraser_main
from sft_eraser.cli import serve_commands
from training.argparse_dataclass import dataclass_from_args
from training.cli import build_parser, main
from training.configs import EraserConfig, LCDDConfig


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


def test_the_offline_commands_work_without_the_server_installed(monkeypatch, capsys):
    # A `[train]` install has no uvicorn: `sft-eraser` still runs, without `serve`.
    with monkeypatch.context() as m:
        m.delitem(sys.modules, "server.cli", raising=False)
        m.setitem(sys.modules, "uvicorn", None)  # import uvicorn -> ModuleNotFoundError
        assert serve_commands() == []
        with pytest.raises(SystemExit):
            sft_eraser_main(["serve", "--help"])
        assert "invalid choice: 'serve'" in capsys.readouterr().err
    with monkeypatch.context() as m:  # a module of the project missing: a broken install
        m.delitem(sys.modules, "server.cli", raising=False)
        m.setitem(sys.modules, "server.settings", None)
        with pytest.raises(ModuleNotFoundError):
            serve_commands()


def test_the_extras_hold_each_halfs_dependencies():
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    names = {k: {re.split(r"[<>=\[]", d)[0] for d in v} for k, v in extras.items()}
    assert {"fastapi", "uvicorn", "pydantic-settings"} <= names["serve"]
    assert "gguf" in names["train"] and not names["train"] & names["serve"]
    assert "sft-eraser" in names["dev"]  # `.[dev]`: both halves and the test tools
    assert "sft-eraser[train,serve]" in extras["dev"]
