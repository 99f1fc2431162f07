"""Request bodies of the OpenAI-compatible routes, plus this server's `erasers` field.

Unknown fields are refused rather than ignored: a misspelled `erasers` silently ignored would
leave a behavior on that the caller meant to switch off.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

MAX_STOP_STRINGS = 4


def _encodable(text: str) -> str:
    """JSON's \\u escapes can spell lone surrogates, which no tokenizer (nor UTF-8) can take."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        where = f"a lone surrogate at character {e.start}"
        raise ValueError(f"not valid Unicode text ({where})") from None
    return text


Text = Annotated[str, AfterValidator(_encodable)]


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: Text


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "developer", "user", "assistant"]
    content: Text | list[TextPart]
    name: Text | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False


class SamplingFields(BaseModel):
    """What both routes share: sampling, limits, streaming and the erasers to prepend."""

    model_config = ConfigDict(extra="forbid")
    model: Text
    erasers: list[Text] = Field(
        default_factory=list,
        description="NAME or NAME@VERSION; stacked by behavior, name, version (any order given)",
    )
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    stop: Text | list[Text] | None = Field(None, validate_default=True)
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1, le=1, description="one choice per request")
    ignore_eos: bool = Field(False, description="generate max_tokens even past end-of-sequence")
    user: Text | None = None

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, v):
        stops = [v] if isinstance(v, str) else list(v or [])
        if len(stops) > MAX_STOP_STRINGS:
            raise ValueError(f"at most {MAX_STOP_STRINGS} stop strings")
        if any(s == "" for s in stops):
            raise ValueError("stop strings must not be empty")
        return stops

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)

    @property
    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(SamplingFields):
    # One prompt per request; a list of one is accepted as OpenAI clients may send it.
    prompt: Text | Annotated[list[Text], Field(min_length=1, max_length=1)]

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, v):
        return v[0] if isinstance(v, list) else v

    @property
    def token_limit(self) -> int | None:
        return self.max_tokens
