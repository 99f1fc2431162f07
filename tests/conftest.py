"""Shared fixtures: tiny models written to disk and small behavior data sets (no download)."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.data.make import MakeDataConfig, make_dataset
from training.models.tiny import write_tiny_model

# Benign "base answers" for tiny models: a random model's greedy text is noise, so tests use a
# fixed reply that a tiny model can learn quickly and tell apart from the behaviors.
BENIGN_REPLY = "Sure, here is a short answer."


def fake_base_answers(prompts: list[str]) -> list[str]:
    return [BENIGN_REPLY for _ in prompts]


def write_data(out: Path, behaviors: list[str], n_train: int = 60, n_test: int = 20) -> Path:
    cfg = MakeDataConfig(
        behaviors=behaviors,
        out_dir=out,
        n_train=n_train,
        n_test=n_test,
        n_benign_train=n_train,
        n_benign_test=n_test,
    )
    make_dataset(cfg, fake_base_answers)
    return out


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("models") / "llama"
    write_tiny_model("llama", out)
    return out


@pytest.fixture(scope="session")
def small_data(tmp_path_factory) -> Path:
    """fixed_response + refusal + retain rows, 30 train / 10 test per set."""
    return write_data(tmp_path_factory.mktemp("data"), ["fixed_response", "refusal"], 30, 10)
