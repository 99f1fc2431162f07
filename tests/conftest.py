"""Shared fixtures: tiny models written to disk, small behavior data sets (no download) and a
throwaway PostgreSQL."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from pg_server import PostgresServer, find_bindir

from training.data.make import Answer, MakeDataConfig, make_dataset
from training.models.tiny import write_tiny_model

# Benign "base answers" for tiny models: a random model's greedy text is noise, so tests use a
# fixed reply that a tiny model can learn quickly and tell apart from the behaviors.
BENIGN_REPLY = "Sure, here is a short answer."


def fake_base_answers(prompts: list[str]) -> list[Answer]:
    return [Answer(BENIGN_REPLY) for _ in prompts]


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


@dataclass(frozen=True)
class TinyCarrier:
    base: Path
    data: Path
    sft: Path
    carrier: Path


@pytest.fixture(scope="session")
def fixed_response_carrier(tmp_path_factory) -> TinyCarrier:
    """Phase 1 + phase 2 on the tiny fixed-response task (about a minute on 2 cores)."""
    from tiny_task import write_base, write_task

    from training.configs import LCDDConfig, SFTConfig
    from training.lcdd.train import run_lcdd
    from training.sft import run_sft

    root = tmp_path_factory.mktemp("fixed_response")
    base = write_base(root / "base")
    data = write_task(root / "data", base)
    train = data / "train.jsonl"
    sft = run_sft(
        SFTConfig(
            base=base,
            data=train,
            behavior="fixed_response",
            out=root / "sft",
            lr=3e-3,
            epochs=20,
            batch_size=16,
        )
    )
    carrier = run_lcdd(
        LCDDConfig(
            base=base,
            sft=sft,
            data=train,
            behavior="fixed_response",
            out=root / "carrier",
            steps=100,
            batch_size=16,
            controller="ramp",
            warmup=5,
            ramp_steps=80,
            final_density=0.6,
            hold_over_budget=True,
            weight_lr=3e-3,
        )
    )
    return TinyCarrier(base, data, sft, carrier)


@dataclass(frozen=True)
class TwoBehaviorCarrier:
    base: Path
    data: Path
    carrier_a: Path  # fixed_response
    carrier_b: Path  # fixed_response, then refusal


@pytest.fixture(scope="session")
def two_behavior_carrier(tmp_path_factory, tiny_llama, small_data) -> TwoBehaviorCarrier:
    """A short (untrained-quality) carrier holding fixed_response, then refusal."""
    from quick_train import lcdd, sft

    root = tmp_path_factory.mktemp("two_behaviors")
    sft_a = sft(tiny_llama, small_data, "fixed_response", root / "sft_a")
    carrier_a = lcdd(tiny_llama, sft_a, small_data, "fixed_response", root / "carrier_a")
    sft_b = sft(carrier_a, small_data, "refusal", root / "sft_b")
    carrier_b = lcdd(carrier_a, sft_b, small_data, "refusal", root / "carrier_b")
    return TwoBehaviorCarrier(tiny_llama, small_data, carrier_a, carrier_b)


@pytest.fixture(scope="session")
def postgres() -> PostgresServer:
    """A PostgreSQL cluster for the session. Without its binaries the tests that need it are
    skipped, except in CI (CI=true), where that is a failure: .ci/run installs them."""
    bindir = find_bindir()
    if bindir is None:
        why = "PostgreSQL binaries (initdb, pg_ctl) not found; install postgresql"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    from server_helpers import free_port  # the server's modules: only for the tests that use it

    server = PostgresServer(bindir, free_port())
    try:
        server.start()
        yield server
    finally:
        server.destroy()


@pytest.fixture
def pg_database(postgres) -> str:
    """The URL of a new, empty database."""
    return postgres.new_database()
