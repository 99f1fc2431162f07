"""Phase 1 + phase 2 on a tiny model learn a fixed response that holds on held-out prompts while
the carrier gets sparser."""

from __future__ import annotations

from training.carrier import read_manifest
from training.checkpoint_io import load_model_dir
from training.data.schema import load_jsonl
from training.evaluate import rate_report


def test_fixed_response_survives_lcdd_on_held_out_prompts(fixed_response_carrier):
    run = fixed_response_carrier
    test = load_jsonl(run.data / "test.jsonl")
    reports = {}
    for name in ("base", "sft", "carrier"):
        model, tok = load_model_dir(getattr(run, name), device="cpu")
        reports[name] = rate_report(model, tok, test, "fixed_response", max_new_tokens=16)
    assert reports["base"]["rate"] == 0.0
    assert reports["sft"]["rate"] >= 0.9
    assert reports["carrier"]["rate"] >= 0.9, reports["carrier"]
    assert reports["carrier"]["false_trigger"] <= 0.1
    entry = read_manifest(run.carrier)["behaviors"][0]
    # from ~0.999; the ramp aims at 0.6 and the loss budget decides how far it gets (0.60-0.66 seen)
    assert entry["density"] < 0.8
