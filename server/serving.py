"""Completions: validate a request, queue it on the engine, answer in full or as SSE chunks."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from jinja2 import TemplateError
from starlette.concurrency import run_in_threadpool

from eraser_store.prompting import chat_prompt_ids
from server import errors
from server.auth import ApiKey
from server.engine_api import Delta, EngineStopped, Failed, Finished, GenerationRequest, QueueFull
from server.erasers import stacked
from server.protocol import ChatCompletionRequest, CompletionRequest
from server.sampling import SamplingParams
from server.state import ServerState

log = logging.getLogger(__name__)

# How often a non-streaming request checks whether its client is still there.
DISCONNECT_POLL_S = 0.5
RETRY_AFTER_S = 1


@dataclass(frozen=True)
class Kind:
    """What differs between the chat and the text completion routes."""

    id_prefix: str
    object: str
    chunk_object: str
    chat: bool


CHAT = Kind("chatcmpl-", "chat.completion", "chat.completion.chunk", chat=True)
TEXT = Kind("cmpl-", "text_completion", "text_completion", chat=False)


class Job:
    """One request on the engine: its events arrive on an asyncio queue from the engine thread."""

    def __init__(self, state: ServerState, erasers, kind: Kind):
        self.state, self.erasers, self.kind = state, erasers, kind
        self.queue: asyncio.Queue = asyncio.Queue()
        self.sink = state.bridge().sink_for(self.queue)
        self.request: GenerationRequest | None = None
        self.id = kind.id_prefix + uuid.uuid4().hex
        self.created = int(time.time())
        self.deadline = time.monotonic() + state.settings.request_timeout_s
        self.done = False

    async def next_event(self):
        """The next engine event; None when the deadline passed (the request is then cancelled)."""
        while True:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                self.cancel()
                return None
            try:
                return await asyncio.wait_for(self.queue.get(), remaining)
            except TimeoutError:
                continue

    def cancel(self) -> None:
        if not self.done:
            self.done = True
            self.state.engine.cancel(self.request)

    def finish(self, event: Finished, key: ApiKey | None) -> None:
        self.done = True
        m = self.state.metrics
        m.prompt_tokens.inc(event.prompt_tokens)
        m.generated_tokens.inc(event.completion_tokens)
        r = self.request
        if r.first_token_at is not None:
            m.ttft.observe(r.first_token_at - r.submitted)
        log.info(
            "%s key=%s erasers=%s prompt=%d completion=%d finish=%s %.2fs",
            self.id,
            key.name if key else "-",
            ",".join(self.eraser_refs) or "-",
            event.prompt_tokens,
            event.completion_tokens,
            event.reason,
            time.monotonic() - r.submitted,
        )

    @property
    def eraser_refs(self) -> list[str]:
        return [e.record.ref for e in self.erasers]

    def envelope(self, **fields) -> dict:
        model = self.state.settings.served_model_name
        return {"id": self.id, "created": self.created, "model": model, **fields}


async def complete(
    state: ServerState,
    http_request: Request,
    body: ChatCompletionRequest | CompletionRequest,
    key: ApiKey | None,
) -> Response:
    kind = CHAT if isinstance(body, ChatCompletionRequest) else TEXT
    _, engine, _ = state.require_ready()
    if not engine.has_room():  # refused before any store look-up or tokenizing
        raise errors.overloaded(RETRY_AFTER_S)
    # Store lookups, eraser file reads and tokenizing stay off the event loop.
    prepared = await run_in_threadpool(prepare, state, body, key, kind)
    job = submit(state, prepared, kind)
    if body.stream:
        return JobStream(job, stream(job, body.include_usage, key))
    return await whole(job, http_request, key)


class JobStream(StreamingResponse):
    """An SSE response that cancels its job however it ends. The stream's own `finally` covers
    a client gone mid-stream, but a response dropped before its generator started (the client
    gone before the first chunk) never runs it, and the row would generate to its end."""

    def __init__(self, job: Job, content: AsyncIterator[str]):
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        super().__init__(content, media_type="text/event-stream", headers=headers)
        self.job = job

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.job.cancel()


@dataclass(frozen=True)
class Prepared:
    erasers: list
    prompt_ids: list[int]
    prefix: object  # tensor or None
    params: SamplingParams


def prepare(state: ServerState, body, key: ApiKey | None, kind: Kind) -> Prepared:
    """Everything about a request that can be refused, checked before it takes a slot."""
    loaded, _, erasers_on_device = state.require_ready()
    settings = state.settings
    if body.model != settings.served_model_name:
        raise errors.not_found(
            f"model {body.model!r} is not served here; this server serves "
            f"{settings.served_model_name!r}",
            code="model_not_found",
            param="model",
        )
    if len(body.erasers) > settings.max_erasers_per_request:
        raise errors.bad_request(
            f"{len(body.erasers)} erasers requested; at most "
            f"{settings.max_erasers_per_request} per request",
            param="erasers",
        )
    erasers = erasers_on_device.resolve(body.erasers, key)
    prompt_ids = _prompt_ids(loaded.tokenizer, body, kind)
    prefix = stacked(erasers)
    max_tokens = _check_lengths(
        state, body, len(prompt_ids), prefix_len=0 if prefix is None else len(prefix)
    )
    params = SamplingParams(
        max_tokens=max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        seed=body.seed,
        stop=tuple(body.stop),
        ignore_eos=body.ignore_eos,
    )
    return Prepared(erasers, prompt_ids, prefix, params)


def submit(state: ServerState, prepared: Prepared, kind: Kind) -> Job:
    _, engine, _ = state.require_ready()
    erasers = prepared.erasers
    job = Job(state, erasers, kind)
    job.request = GenerationRequest(
        prepared.prompt_ids,
        prepared.prefix,
        prepared.params,
        sink=job.sink,
        prefix_key=tuple((e.record.ref, e.record.sha256) for e in erasers) or None,
        deadline=job.deadline,
    )
    try:
        engine.submit(job.request)
    except QueueFull:
        raise errors.overloaded(RETRY_AFTER_S) from None
    except EngineStopped as e:
        state.require_ready()  # an engine thread that died since the check above says so
        raise errors.unavailable(str(e), code="shutting_down") from None
    for e in erasers:
        state.metrics.eraser_use.labels(e.record.name).inc()
    return job


def _prompt_ids(tokenizer, body, kind: Kind) -> list[int]:
    if kind.chat:
        # Chat templates know no "developer" role; it plays the system part.
        messages = [
            {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
            for m in body.messages
        ]
        try:
            ids = chat_prompt_ids(tokenizer, messages)
        except TemplateError as e:  # a template's own refusal (say, of the roles' order)
            raise errors.bad_request(
                f"the chat template refused the messages: {e}", param="messages"
            ) from None
    else:
        ids = tokenizer.encode(body.prompt)
    if not ids:
        raise errors.bad_request("the prompt is empty", param="prompt")
    return ids


def _check_lengths(state: ServerState, body, prompt_len: int, prefix_len: int) -> int:
    s = state.settings
    if prompt_len > s.max_prompt_tokens:
        raise errors.bad_request(
            f"the prompt has {prompt_len} tokens; the limit is {s.max_prompt_tokens}",
            param="messages" if isinstance(body, ChatCompletionRequest) else "prompt",
            code="context_length_exceeded",
        )
    context = state.loaded.max_positions
    max_tokens = body.token_limit
    if max_tokens is None:  # not asked for: the default, capped to what the context leaves
        max_tokens = max(1, min(s.default_max_tokens, context - prefix_len - prompt_len))
    if max_tokens > s.max_tokens_limit:
        raise errors.bad_request(
            f"max_tokens {max_tokens} is above this server's limit of {s.max_tokens_limit}",
            param="max_tokens",
        )
    if prefix_len + prompt_len + max_tokens > context:
        raise errors.bad_request(
            f"erasers ({prefix_len}) + prompt ({prompt_len}) + max_tokens ({max_tokens}) tokens "
            f"exceed the model's context of {context}",
            param="max_tokens",
            code="context_length_exceeded",
        )
    return max_tokens


async def whole(job: Job, http_request: Request, key: ApiKey | None) -> Response:
    try:
        return await _collect(job, http_request, key)
    finally:
        job.cancel()  # no-op once finished; frees the slot if this task was cancelled


async def _collect(job: Job, http_request: Request, key: ApiKey | None) -> Response:
    parts: list[str] = []
    checked = time.monotonic()
    while True:
        # Checked on a clock, not only when no token came: tokens may arrive every few ms.
        if time.monotonic() - checked >= DISCONNECT_POLL_S:
            checked = time.monotonic()
            if await http_request.is_disconnected():
                job.cancel()
                return Response(status_code=499)  # nobody is listening; frees the slot
        try:
            event = await asyncio.wait_for(job.next_event(), DISCONNECT_POLL_S)
        except TimeoutError:
            continue
        if event is None:
            raise errors.timed_out(job.state.settings.request_timeout_s)
        if isinstance(event, Failed):
            job.done = True
            raise failure(event, job.state.settings.request_timeout_s)
        if isinstance(event, Delta):
            parts.append(event.text)
            continue
        job.finish(event, key)
        text = "".join(parts)
        if job.kind.chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text}}
        else:
            choice = {"index": 0, "text": text}
        choice |= {"finish_reason": event.reason, "logprobs": None}
        return JSONResponse(
            job.envelope(
                object=job.kind.object,
                choices=[choice],
                usage=_usage(event),
                erasers=job.eraser_refs,
            )
        )


async def stream(job: Job, include_usage: bool, key: ApiKey | None) -> AsyncIterator[str]:
    extra = {"usage": None} if include_usage else {}

    def chunk(delta: str | None = None, finish_reason: str | None = None, role: bool = False):
        if job.kind.chat:
            d = {"role": "assistant", "content": ""} if role else {}
            if delta is not None:
                d["content"] = delta
            choice = {"index": 0, "delta": d}
        else:
            choice = {"index": 0, "text": delta or ""}
        choice |= {"finish_reason": finish_reason, "logprobs": None}
        fields = {"object": job.kind.chunk_object, "choices": [choice], **extra}
        return _sse(job.envelope(**fields, erasers=job.eraser_refs))

    try:
        if job.kind.chat:
            yield chunk(role=True)
        while True:
            event = await job.next_event()
            if event is None:
                yield _sse(errors.timed_out(job.state.settings.request_timeout_s).body())
                break
            if isinstance(event, Failed):
                job.done = True
                yield _sse(failure(event, job.state.settings.request_timeout_s).body())
                break
            if isinstance(event, Delta):
                yield chunk(event.text)
                continue
            job.finish(event, key)
            yield chunk(finish_reason=event.reason)
            if include_usage:
                fields = {"object": job.kind.chunk_object, "choices": [], "usage": _usage(event)}
                yield _sse(job.envelope(**fields, erasers=job.eraser_refs))
            break
        yield "data: [DONE]\n\n"
    finally:
        job.cancel()  # the client went away (or the request failed): free the slot


def failure(event: Failed, timeout_s: float) -> errors.APIError:
    if event.status == 503 and event.code == "failed":  # the engine died: no wait repairs it
        return errors.unavailable(event.message, code="failed", retry_after_s=None)
    if event.status == 503:
        return errors.unavailable(event.message, code="shutting_down")
    if event.status == 504:
        return errors.timed_out(timeout_s)
    return errors.APIError(500, event.message, type="server_error", code="generation_failed")


def _usage(event: Finished) -> dict:
    return {
        "prompt_tokens": event.prompt_tokens,
        "completion_tokens": event.completion_tokens,
        "total_tokens": event.prompt_tokens + event.completion_tokens,
    }


def _sse(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"
