"""Chat templates a model directory can be given: the contract for every prompt it will see."""

from __future__ import annotations

IM_START, IM_END = "<|im_start|>", "<|im_end|>"

# Plain ChatML (the format of SmolLM2 and Qwen): each message as written, no default system message.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# "model": the template the checkpoint ships. "chatml": CHATML_TEMPLATE, for ChatML models whose
# own template adds a default system message to every conversation without one (SmolLM2's: 21
# tokens, a quarter of the demo's eraser rows and half of its prompts; docs/results.md measures
# the demo without it).
CHAT_TEMPLATES = ("model", "chatml")


def set_chat_template(tokenizer, choice: str) -> None:
    """Give `tokenizer` the chat template named `choice` (one of CHAT_TEMPLATES)."""
    if choice not in CHAT_TEMPLATES:
        raise ValueError(f"chat template is one of {', '.join(CHAT_TEMPLATES)}, not {choice!r}")
    if choice == "model":
        return
    for marker in (IM_START, IM_END):
        if len(tokenizer.encode(marker, add_special_tokens=False)) != 1:
            raise ValueError(
                f"--chat-template chatml needs a ChatML tokenizer: {marker} is not one token here"
            )
    tokenizer.chat_template = CHATML_TEMPLATE
