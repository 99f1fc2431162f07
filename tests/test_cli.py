"""The command line end to end on a tiny model: model tiny, data make, train sft/carrier, eval."""

from __future__ import annotations

import json

from training.cli import build_parser, main
from training.configs import LCDDConfig


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
        "--n-test",
        "8",
        "--n-benign-train",
        "16",
        "--n-benign-test",
        "8",
        "--max-new-tokens",
        "8",
    ]
    assert main(argv) == 0
    meta = json.loads((data / "meta.json").read_text())
    assert meta["counts"]["test"]["fixed_response"] == 8
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
