"""`serve --engine vllm` on SmolLM2-135M (fp32, CPU): the same replies as the built-in engine and
as offline generation, and the same API semantics.

They run where vLLM imports (scripts/test.sh runs them in .venv-vllm, with
SFT_ERASER_REQUIRE_VLLM=1 so that a broken vLLM install fails instead of skipping); the main
environment skips them. The erasers are random soft prompts registered in a store, as in
test_smollm2.py: the engines must place them, not know what they were trained for.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

import httpx
import pytest
from server_helpers import (
    as_carrier,
    assert_error,
    chat_body,
    metric,
    offline_replies,
    running_server,
    served_carrier,
    sse_events,
)

from server.engine_api import Failed, Finished, GenerationRequest
from server.engines import vllm_installed
from server.sampling import SamplingParams

if not vllm_installed() and not os.environ.get("SFT_ERASER_REQUIRE_VLLM"):
    pytest.skip(
        "vLLM is not installed here (scripts/test.sh runs these in .venv-vllm)",
        allow_module_level=True,
    )

pytestmark = pytest.mark.vllm

PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about rain.",
    "List three prime numbers, separated by commas.",
    "Explain in one sentence what a compiler does.",
]
SETS = [[], ["a"], ["b"], ["a", "b"]]
TOKENS = 24
# The engine's settings for the tests: a small KV cache and context (the machine is shared).
VLLM = {"engine": "vllm", "max_model_len": 2048, "kv_cache_gb": 1, "ready_timeout_s": 600}


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    from training.checkpoint_io import load_model_dir
    from training.models.gguf_import import import_gguf

    out = import_gguf(tmp_path_factory.mktemp("smollm2") / "base")
    return load_model_dir(out, device="cpu")


@pytest.fixture(scope="module")
def served(smollm2, tmp_path_factory):
    root = tmp_path_factory.mktemp("served")
    return served_carrier(as_carrier(smollm2[0], root / "carrier"), root / "store")


@pytest.fixture(scope="module")
def offline(smollm2, served) -> dict[tuple[str, str], str]:
    expected = offline_replies(*smollm2, served, PROMPTS, SETS, TOKENS)
    # The erasers change the replies, so their placement is tested.
    assert any(expected[(p, "")] != expected[(p, "a")] for p in PROMPTS)
    assert any(expected[(p, "a")] != expected[(p, "a+b")] for p in PROMPTS)
    return expected


@pytest.fixture(scope="module")
def vllm_server(served):
    with running_server(served, max_batch_size=16, **VLLM) as (url, app):
        yield url, app


def replies_together(url: str, model: str) -> dict[tuple[str, str], dict]:
    """Every prompt with every eraser set, all 16 sent at once: (prompt, set) -> response."""

    async def everything():
        async with httpx.AsyncClient(base_url=url, timeout=600) as client:

            async def one(p, e):
                r = await client.post("/v1/chat/completions", json=chat_body(model, p, e))
                assert r.status_code == 200, r.text
                return (p, "+".join(e)), r.json()

            return await asyncio.gather(*(one(p, e) for p in PROMPTS for e in SETS))

    return dict(asyncio.run(everything()))


def content(response: dict) -> str:
    return response["choices"][0]["message"]["content"]


def test_vllm_equals_builtin_and_offline_alone_and_in_a_batch_of_16(served, offline, vllm_server):
    url, _ = vllm_server
    together = replies_together(url, served.model_name)
    assert {k: content(v).strip() for k, v in together.items()} == offline
    alone = {}
    for p in PROMPTS:
        for e in SETS:
            r = httpx.post(url + "/v1/chat/completions", json=chat_body(served.model_name, p, e))
            alone[(p, "+".join(e))] = r.json()
    assert {k: content(v) for k, v in alone.items()} == {k: content(v) for k, v in together.items()}
    assert {k: v["usage"] for k, v in alone.items()} == {k: v["usage"] for k, v in together.items()}
    with running_server(served, engine="builtin", max_batch_size=16) as (builtin_url, _):
        builtin = replies_together(builtin_url, served.model_name)
    for k, v in builtin.items():
        assert content(v) == content(together[k]), k
        assert v["usage"] == together[k]["usage"], k
        assert v["choices"][0]["finish_reason"] == together[k]["choices"][0]["finish_reason"]
        assert v["erasers"] == together[k]["erasers"]


def test_streamed_equals_whole(served, vllm_server):
    url, _ = vllm_server
    for erasers, extra in (([], {}), (["a", "b"], {"stop": [","]}), (["b"], {"max_tokens": 5})):
        body = chat_body(served.model_name, PROMPTS[2], erasers, **extra)
        whole = httpx.post(url + "/v1/chat/completions", json=body, timeout=300).json()
        stream_body = body | {"stream": True, "stream_options": {"include_usage": True}}
        with httpx.stream("POST", url + "/v1/chat/completions", json=stream_body) as r:
            events = sse_events(r)
        assert events[-1] == "[DONE]"
        chunks = [e for e in events[:-1] if e["choices"]]
        text = "".join(e["choices"][0]["delta"].get("content", "") for e in chunks)
        assert text == content(whole)
        assert chunks[-1]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]
        assert events[-2]["usage"] == whole["usage"]


def test_stop_strings_max_tokens_ignore_eos_and_seed(served, vllm_server):
    url, _ = vllm_server
    post = lambda **kw: httpx.post(  # noqa: E731
        url + "/v1/chat/completions", json=chat_body(served.model_name, PROMPTS[0], **kw)
    ).json()
    full = post()
    text = content(full)
    assert len(text) > 8
    cut = post(stop=[text[4:8]])
    assert content(cut) == text[:4] and cut["choices"][0]["finish_reason"] == "stop"
    short = post(max_tokens=3)
    assert short["usage"]["completion_tokens"] == 3
    assert short["choices"][0]["finish_reason"] == "length"
    assert text.startswith(content(short))
    # The model ends this reply early; ignore_eos generates all of max_tokens.
    assert full["usage"]["completion_tokens"] < 60 and full["choices"][0]["finish_reason"] == "stop"
    long = post(max_tokens=60, ignore_eos=True)
    assert long["usage"]["completion_tokens"] == 60
    sampled = [post(temperature=1.0, top_p=0.9, seed=7, max_tokens=16) for _ in range(2)]
    assert content(sampled[0]) == content(sampled[1])


def test_different_erasers_never_share_cached_kv(served, vllm_server):
    """Prefix caching is on: the same text behind another eraser set finds nothing cached (the
    cache key covers the embeddings), while the same request again does."""
    url, _ = vllm_server
    long_prompt = "Summarize: " + " ".join(f"item {i} is a fruit basket." for i in range(60))

    def hits_of(erasers) -> float:
        before = metric(url, "sft_eraser_prefix_cache_hit_tokens_total")
        body = chat_body(served.model_name, long_prompt, erasers, max_tokens=2)
        assert httpx.post(url + "/v1/chat/completions", json=body, timeout=300).status_code == 200
        return metric(url, "sft_eraser_prefix_cache_hit_tokens_total") - before

    assert hits_of(["a"]) == 0  # first time: nothing cached
    assert hits_of(["b"]) == 0  # same text, other eraser
    assert hits_of([]) == 0
    assert hits_of(["a", "b"]) == 0
    assert hits_of(["a"]) > 100  # the same again: its KV is reused
    assert metric(url, "sft_eraser_prefix_cache_queried_tokens_total") > 500


def test_client_gone_aborts_the_request_in_the_engine(served, vllm_server):
    url, app = vllm_server
    engine = app.state.server.engine
    body = chat_body(served.model_name, PROMPTS[1], max_tokens=1000, ignore_eos=True, stream=True)
    with httpx.stream("POST", url + "/v1/chat/completions", json=body) as r:
        for line in r.iter_lines():
            if '"content": "' in line and '"content": ""' not in line:
                break  # generation is under way; leave
    deadline = time.monotonic() + 30
    while engine.running and time.monotonic() < deadline:
        time.sleep(0.1)
    assert engine.running == 0 and engine.waiting == 0


def test_bad_requests_are_refused_before_the_engine(served, vllm_server):
    url, _ = vllm_server
    model = served.model_name
    too_long = chat_body(model, "x " * 3000)
    assert_error(httpx.post(url + "/v1/chat/completions", json=too_long), 400)
    over = chat_body(model, PROMPTS[0], max_tokens=1000)
    # 2048 (--max-model-len) is the context here.
    over["messages"][0]["content"] = "word " * 1200
    assert_error(
        httpx.post(url + "/v1/chat/completions", json=over), 400, code="context_length_exceeded"
    )
    raw = chat_body(model, PROMPTS[0]) | {"prompt_embeds": [[0.0] * 576]}
    assert_error(httpx.post(url + "/v1/chat/completions", json=raw), 400, param="prompt_embeds")
    assert_error(httpx.post(url + "/v1/chat/completions", json=chat_body(model, "hi", ["zz"])), 404)
    ok = httpx.post(url + "/v1/chat/completions", json=chat_body(model, PROMPTS[0], max_tokens=2))
    assert ok.status_code == 200


def test_a_request_past_its_deadline_is_aborted_with_a_504(vllm_server):
    _, app = vllm_server
    loaded, engine = app.state.server.loaded, app.state.server.engine
    events, done = [], threading.Event()

    def sink(event):
        events.append(event)
        if isinstance(event, Failed | Finished):
            done.set()

    ids = loaded.tokenizer.encode("Tell me a long story.")
    params = SamplingParams(max_tokens=1000, ignore_eos=True)
    engine.submit(GenerationRequest(ids, None, params, sink, deadline=time.monotonic() + 2))
    assert done.wait(60)
    assert isinstance(events[-1], Failed) and events[-1].status == 504
    assert 0 < len(events) - 1 < 1000  # it generated, then stopped at the deadline
    deadline = time.monotonic() + 10
    while engine.running and time.monotonic() < deadline:
        time.sleep(0.1)
    assert engine.running == 0


def test_sigterm_drain_fails_what_is_left_with_a_503(served, vllm_server):
    """Last on the module's server: it stops its engine."""
    url, app = vllm_server
    engine = app.state.server.engine
    body = chat_body(served.model_name, "hi", stream=True, max_tokens=1000, ignore_eos=True)
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=60) as r:
        lines = r.iter_lines()
        next(line for line in lines if '"content"' in line)  # under way
        threading.Thread(target=engine.shutdown, args=(0.5,)).start()
        events = sse_events(lines)
    assert events[-2]["error"]["code"] == "shutting_down" and events[-1] == "[DONE]"


def test_a_dead_engine_turns_health_red_and_requests_get_503(served):
    """vLLM's engine processes killed (as an out-of-memory kill would): the request in flight
    and the next ones get 503, /health and /ready turn red; nothing hangs."""
    import psutil

    others = {p.pid for p in psutil.Process().children(recursive=True)}  # not this server's
    with running_server(served, **VLLM) as (url, _):
        body = chat_body(served.model_name, "hi", stream=True, max_tokens=1000, ignore_eos=True)
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=60) as r:
            lines = r.iter_lines()
            next(line for line in lines if '"content"' in line)  # under way
            mine = psutil.Process().children(recursive=True)
            children = [p for p in mine if p.pid not in others]
            assert children
            for child in children:
                os.kill(child.pid, signal.SIGKILL)
            events = sse_events(lines)
        assert events[-2]["error"]["code"] == "failed" and events[-1] == "[DONE]"
        assert httpx.get(url + "/health").json()["status"] == "failed"
        assert httpx.get(url + "/ready").status_code == 503
        r = httpx.post(url + "/v1/chat/completions", json=chat_body(served.model_name, "hi"))
        assert_error(r, 503, code="failed")
