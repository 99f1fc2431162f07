"""What the front (routes, serving) asks of an engine, whichever runs the model.

A request goes in with `submit`; its events (text deltas, then one Finished or Failed) come back
through its `sink`, called on the engine's own thread. Both engines (server/engine.py, the
built-in one; server/vllm_engine.py) implement `GenerationEngine` and end replies with the same
`Reply`, so EOS, stop strings, `max_tokens`, the context limit and `usage` mean the same on both.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Protocol

import torch

from server.detokenizer import TextStream
from server.sampling import SamplingParams


@dataclass(frozen=True)
class Delta:
    text: str


@dataclass(frozen=True)
class Finished:
    reason: str  # "stop" (EOS or a stop string) or "length"
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class Failed:
    message: str
    status: int = 500  # 503: the server is shutting down (retry elsewhere); 504: deadline
    code: str | None = None  # "failed" with 503: the engine died (no retry helps here)


Event = Delta | Finished | Failed


@dataclass(eq=False)  # requests are compared by identity (they hold tensors)
class GenerationRequest:
    prompt_ids: list[int]
    prefix: torch.Tensor | None  # (n, hidden) eraser embeddings, in the engine's device and dtype
    params: SamplingParams
    sink: Callable[[Event], None]
    cancelled: bool = False  # set from another thread; the engine drops the request soon after
    submitted: float = field(default_factory=time.monotonic)
    # The engine drops the request at this time (monotonic clock), whatever happened to the caller.
    deadline: float = float("inf")
    first_token_at: float | None = None  # set by the engine thread
    # Identity of `prefix` (e.g. the erasers' names, versions and hashes): requests with the same
    # key may share the prefix's KV cache. None: computed for this request only.
    prefix_key: Hashable | None = None

    @property
    def prefix_len(self) -> int:
        return 0 if self.prefix is None else self.prefix.shape[0]


class QueueFull(RuntimeError):
    pass


class EngineStopped(RuntimeError):
    pass


class GenerationEngine(Protocol):
    """The engine behind the routes. `submit`, `has_room` and `cancel` are called from the
    event loop's threads; `shutdown` from any thread."""

    def start(self) -> None: ...

    def submit(self, request: GenerationRequest) -> None:
        """Queue a request; raises QueueFull (429) or EngineStopped (503)."""

    def has_room(self) -> bool:
        """Whether `submit` would queue a request now (a hint; submit decides)."""

    def cancel(self, request: GenerationRequest) -> None:
        """Stop generating for a request (client gone, deadline); no more events after it."""

    def shutdown(self, drain_timeout_s: float) -> None:
        """Stop taking requests, let those in flight finish for up to `drain_timeout_s`, fail
        the rest with a 503 event, stop."""

    @property
    def alive(self) -> bool:
        """False once the engine can never serve again (its thread or process died)."""

    @property
    def waiting(self) -> int: ...

    @property
    def running(self) -> int: ...

    def counters(self) -> dict[str, float]:
        """Monotonic counters for /metrics, by name (metrics.ENGINE_COUNTERS)."""


class Reply:
    """One request's reply token by token: hands out its text and ends it on EOS, a stop
    string, `max_tokens` or the context, the same way in every engine."""

    def __init__(self, request: GenerationRequest, tokenizer, eos_ids: set[int], position: int):
        self.request = request
        self.text = TextStream(tokenizer, request.params.stop)
        self.eos_ids = eos_ids
        self.position = position  # position id of the next input token
        self.generated = 0

    def take(self, token: int, max_positions: int) -> bool:
        """Account for the next generated token, send its events; True when the reply ended."""
        request, params = self.request, self.request.params
        self.generated += 1
        if self.generated == 1:
            request.first_token_at = time.monotonic()
        reason = None
        if token in self.eos_ids and not params.ignore_eos:
            reason = "stop"
        else:
            text, stopped = self.text.push(token)
            if text:
                request.sink(Delta(text))
            if stopped:
                reason = "stop"
        if reason is None and (
            self.generated >= params.max_tokens or self.position >= max_positions
        ):
            reason = "length"
        self.position += 1
        if reason is None:
            return False
        self.end(reason)
        return True

    def end(self, reason: str) -> None:
        """Hand out the text held back for a possible stop string, then Finished."""
        rest = self.text.flush()
        if rest:
            self.request.sink(Delta(rest))
        self.request.sink(Finished(reason, len(self.request.prompt_ids), self.generated))
