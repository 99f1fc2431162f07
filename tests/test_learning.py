"""Phase 1 + phase 2 on a tiny model learn a fixed response that holds on held-out prompts while
the carrier gets sparser."""

from __future__ import annotations

from tiny_task import write_task

from training.checkpoint_io import load_model_dir
from training.configs import LCDDConfig, SFTConfig
from training.data.schema import load_jsonl
from training.evaluate import rate_report
from training.lcdd.train import run_lcdd
from training.models.tiny import write_tiny_model
from training.sft import run_sft


def test_fixed_response_survives_lcdd_on_held_out_prompts(tmp_path):
    data = write_task(tmp_path / "data")
    base = tmp_path / "base"
    write_tiny_model("llama", base, hidden=128, layers=2)
    train, test = data / "train.jsonl", load_jsonl(data / "test.jsonl")
    sft = run_sft(
        SFTConfig(
            base=base,
            data=train,
            behavior="fixed_response",
            out=tmp_path / "sft",
            lr=2e-3,
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
            out=tmp_path / "carrier",
            steps=100,
            batch_size=16,
            controller="ramp",
            warmup=5,
            ramp_steps=80,
            final_density=0.5,
            hold_over_budget=True,
            weight_lr=2e-3,
        )
    )
    reports = {}
    for name, path in (("base", base), ("sft", sft), ("carrier", carrier)):
        model, tok = load_model_dir(path, device="cpu")
        reports[name] = rate_report(model, tok, test, "fixed_response", max_new_tokens=16)
    assert reports["base"]["rate"] == 0.0
    assert reports["sft"]["rate"] >= 0.9
    assert reports["carrier"]["rate"] >= 0.9, reports["carrier"]
    assert reports["carrier"]["false_trigger"] <= 0.1
    import json

    entry = json.loads((carrier / "carrier.json").read_text())["behaviors"][0]
    assert entry["density"] < 0.6  # from ~0.999 at the start
