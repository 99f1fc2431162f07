"""SFT + LCDD end to end on tiny models: every family, carrier round trip, stacked behaviors."""

from __future__ import annotations

import json

import pytest
import torch
from quick_train import lcdd, sft
from transformers import AutoModelForCausalLM

from training.carrier import load_without, read_manifest
from training.checkpoint_io import fingerprint, load_model_dir
from training.models.roles import MASK_GROUPS
from training.models.tiny import FAMILIES, write_tiny_model

IDS = torch.randint(0, 250, (2, 10), generator=torch.Generator().manual_seed(0))


def logits(model):
    with torch.no_grad():
        return model(input_ids=IDS).logits


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_trains_and_round_trips(family, tmp_path, small_data):
    base = tmp_path / "base"
    write_tiny_model(family, base)
    sft_dir = sft(base, small_data, "fixed_response", tmp_path / "sft")
    carrier = lcdd(base, sft_dir, small_data, "fixed_response", tmp_path / "carrier")

    # A plain HF loader opens the carrier; its weights match the recorded fingerprint.
    model = AutoModelForCausalLM.from_pretrained(carrier, dtype=torch.float32).eval()
    manifest = read_manifest(carrier)
    assert manifest["fingerprint"] == fingerprint(model)
    entry = manifest["behaviors"][0]
    assert entry["density"] == pytest.approx(0.5, abs=0.01)
    assert set(entry["group_density"]) == set(MASK_GROUPS)
    assert len(entry["channels"]) == manifest["num_layers"] == 2
    assert (carrier / "fixed_response" / "curves.png").stat().st_size > 0
    assert (carrier / "fixed_response" / "density.png").stat().st_size > 0
    rows = [
        json.loads(r)
        for r in (carrier / "fixed_response" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["step"] for r in rows] == [0, 1, 2, 3]

    # One behavior: the carrier without it is the base model (up to fp32 rounding of W − Δ).
    base_model, _ = load_model_dir(base, device="cpu")
    without, _ = load_without(carrier, "fixed_response", device="cpu")
    assert torch.allclose(logits(without), logits(base_model), atol=1e-5)
    assert not torch.allclose(logits(model), logits(base_model), atol=1e-3)
    # nothing but masked projections moved: norms, embeddings, head are the base's
    base_state = base_model.state_dict()
    for name, tensor in model.state_dict().items():
        if not any(k in name for k in ("proj", "c_attn", "c_fc")):
            assert torch.equal(tensor, base_state[name]), name


def test_stacked_behaviors_remove_the_last_exactly(two_behavior_carrier):
    run = two_behavior_carrier
    carrier_a, carrier_b = run.carrier_a, run.carrier_b

    manifest = read_manifest(carrier_b)
    assert [b["name"] for b in manifest["behaviors"]] == ["fixed_response", "refusal"]
    assert manifest["root_fingerprint"] == read_manifest(carrier_a)["root_fingerprint"]
    assert manifest["behaviors"][1]["parent_fingerprint"] == read_manifest(carrier_a)["fingerprint"]
    for b in manifest["behaviors"]:
        assert (carrier_b / b["delta_file"]).is_file()
        assert (carrier_b / b["record_dir"] / "metrics.jsonl").is_file()

    model_a, _ = load_model_dir(carrier_a, device="cpu")
    without_b, _ = load_without(carrier_b, "refusal", device="cpu")
    for (name, wa), wb in zip(
        model_a.state_dict().items(), without_b.state_dict().values(), strict=True
    ):
        assert torch.allclose(wa, wb, atol=1e-6, rtol=0), name
    assert torch.allclose(logits(without_b), logits(model_a), atol=1e-5)

    # removing both deltas gives the root model back
    base_model, _ = load_model_dir(run.base, device="cpu")
    without_both, _ = load_without(carrier_b, "fixed_response", "refusal", device="cpu")
    assert torch.allclose(logits(without_both), logits(base_model), atol=1e-5)
