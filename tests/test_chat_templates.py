"""The chat template a model directory is given at import (`import-gguf --chat-template`)."""

from __future__ import annotations

import re

import pytest
from transformers import PreTrainedTokenizerFast

from eraser_store.prompting import chat_prompt_ids
from training.models.chat_templates import CHATML_TEMPLATE, set_chat_template
from training.models.tiny import byte_level_core, byte_tokenizer

# ChatML with a default system message, as SmolLM2's own template has.
WITH_DEFAULT_SYSTEM = (
    "{% if messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    + CHATML_TEMPLATE
)
USER = [{"role": "user", "content": "hi"}]


def rendered(tok, messages=USER) -> str:
    return tok.decode(chat_prompt_ids(tok, messages))


def test_chatml_drops_only_the_default_system_message():
    tok = byte_tokenizer()
    tok.chat_template = WITH_DEFAULT_SYSTEM
    set_chat_template(tok, "model")
    assert rendered(tok).startswith("<|im_start|>system\nYou are a helpful assistant.")
    set_chat_template(tok, "chatml")
    assert rendered(tok) == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    # A caller's own system message is still laid out as written.
    system = [{"role": "system", "content": "Be brief."}, *USER]
    assert rendered(tok, system).startswith("<|im_start|>system\nBe brief.<|im_end|>\n")


def test_chatml_needs_the_chatml_tokens():
    plain = PreTrainedTokenizerFast(tokenizer_object=byte_level_core())
    with pytest.raises(ValueError, match=re.escape("<|im_start|> is not one token")):
        set_chat_template(plain, "chatml")
    with pytest.raises(ValueError, match="one of model, chatml"):
        set_chat_template(byte_tokenizer(), "llama3")
