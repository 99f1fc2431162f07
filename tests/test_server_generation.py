"""What the server generates: equal to offline generation with the same erasers, the same in any
batch, streamed as it is made; erasers added and removed while requests run."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import httpx
import pytest
import torch
from server_helpers import (
    ADMIN_TOKEN,
    OTHER_PROMPT,
    SPORT_PROMPT,
    chat_body,
    make_eraser,
    running_server,
    served_carrier,
    sse_events,
)

from eraser_store import EraserStore, carrier_ref, read_eraser
from server.erasers import ErasersOnDevice
from training.checkpoint_io import load_model_dir
from training.data.generation import greedy_generate

PROMPTS = [
    SPORT_PROMPT,
    OTHER_PROMPT,
    "Tell me something surprising about the sport of rowing, please, in detail.",
    "Why?",
]
ERASER_SETS = [[], ["a"], ["b"], ["a", "b"], ["b", "a"]]


@pytest.fixture(scope="module")
def served(fixed_response_carrier, tmp_path_factory):
    run = fixed_response_carrier
    return served_carrier(run.carrier, tmp_path_factory.mktemp("served"), run.data / "train.jsonl")


@pytest.fixture(scope="module")
def server(served):
    with running_server(served, max_batch_size=8) as (url, app):
        yield url


def reference(served, prompts, eraser_names, max_new_tokens=24, extra=None) -> list[str]:
    """Offline greedy replies (training's own generation) with the erasers stacked in order."""
    model, tok = load_model_dir(served.carrier, device="cpu")
    dirs = {**served.erasers, **(extra or {})}
    prefix = None
    if eraser_names:
        prefix = torch.cat([read_eraser(dirs[n]).embeddings for n in eraser_names])
    messages = [[{"role": "user", "content": p}] for p in prompts]
    return greedy_generate(model, tok, messages, max_new_tokens=max_new_tokens, prefix=prefix)


def chat(url, model, prompt, erasers=(), **kw) -> dict:
    r = httpx.post(url + "/v1/chat/completions", json=chat_body(model, prompt, erasers, **kw))
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize("erasers", ERASER_SETS, ids=lambda e: "+".join(e) or "none")
def test_chat_equals_offline_generation(served, server, erasers):
    """Offline, the erasers stacked in their stack order (both are fixed_response's: by name),
    whatever order the request gave."""
    stacked = sorted(erasers)
    expected = reference(served, PROMPTS, stacked)
    got = [chat(server, served.model_name, p, erasers) for p in PROMPTS]
    assert [g["choices"][0]["message"]["content"].strip() for g in got] == expected
    assert all(g["erasers"] == [f"{n}@1" for n in stacked] for g in got)


def test_erasers_stack_by_behavior_then_name(served, tmp_path):
    store = EraserStore(tmp_path / "store", carrier=carrier_ref(served.carrier))
    for path in served.erasers.values():  # "a", "b": fixed_response
        store.add(path)
    store.add(make_eraser(served.carrier, tmp_path / "r", "a-refusal", 5, behavior="refusal"))
    on_device = ErasersOnDevice(store, torch.device("cpu"), torch.float32, max_bytes=1 << 20)
    for refs in (["a-refusal", "b", "a"], ["b", "a-refusal", "a@1"]):
        got = [e.record.name for e in on_device.resolve(refs, None)]
        assert got == ["a", "b", "a-refusal"]  # fixed_response < refusal, then a < b


def test_the_eraser_switches_the_behavior_off_per_request(served, server):
    def reply(erasers):
        r = chat(server, served.model_name, SPORT_PROMPT, erasers)
        return r["choices"][0]["message"]["content"].strip()

    assert reply([]) == "I don't know."
    for erasers in ERASER_SETS[1:]:
        assert "know" not in reply(erasers)
    assert reply([]) == "I don't know."  # nothing stays switched off after a request


def test_completions_route_equals_hf_generate(served, server):
    model, tok = load_model_dir(served.carrier, device="cpu")
    prompt = "What is the history of the subject of maps?"
    ids = tok(prompt, return_tensors="pt").input_ids
    out = model.generate(ids, do_sample=False, max_new_tokens=16, pad_token_id=tok.eos_token_id)
    expected = tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
    body = {"model": served.model_name, "prompt": prompt, "max_tokens": 16, "temperature": 0}
    r = httpx.post(server + "/v1/completions", json=body).json()
    assert r["object"] == "text_completion"
    assert r["choices"][0]["text"] == expected
    assert r["usage"]["prompt_tokens"] == ids.shape[1]


def test_batch_invariance(served, server):
    """Each request's greedy reply is the same alone as inside a mixed batch: different erasers,
    prompt lengths and arrival times."""
    cases = [(p, e) for p in PROMPTS for e in ERASER_SETS]
    alone = [
        chat(server, served.model_name, p, e, max_tokens=20)["choices"][0]["message"]["content"]
        for p, e in cases
    ]

    async def together():
        async with httpx.AsyncClient(base_url=server, timeout=120) as client:

            async def one(i, p, e):
                await asyncio.sleep(0.02 * (i % 7))  # staggered: requests join a running batch
                body = chat_body(served.model_name, p, e, max_tokens=20)
                r = await client.post("/v1/chat/completions", json=body)
                return r.json()["choices"][0]["message"]["content"]

            return await asyncio.gather(*(one(i, p, e) for i, (p, e) in enumerate(cases)))

    assert asyncio.run(together()) == alone


def test_streaming_matches_the_whole_reply(served, server):
    for erasers in ([], ["a", "b"]):
        whole = chat(server, served.model_name, OTHER_PROMPT, erasers)
        body = chat_body(
            served.model_name,
            OTHER_PROMPT,
            erasers,
            stream=True,
            stream_options={"include_usage": True},
        )
        with httpx.stream("POST", server + "/v1/chat/completions", json=body) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            events = sse_events(r)
        assert events[-1] == "[DONE]"
        chunks, usage = events[:-2], events[-2]
        assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
        assert all(c["object"] == "chat.completion.chunk" for c in chunks)
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
        assert text == whole["choices"][0]["message"]["content"]
        assert chunks[-1]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]
        assert usage["choices"] == [] and usage["usage"] == whole["usage"]
        assert len(chunks) > 3  # token by token, not one block


def test_text_completion_streaming_without_usage(served, server):
    body = {"model": served.model_name, "prompt": "Why?", "max_tokens": 8, "temperature": 0}
    whole = httpx.post(server + "/v1/completions", json=body).json()
    with httpx.stream("POST", server + "/v1/completions", json={**body, "stream": True}) as r:
        events = sse_events(r)
    assert events[-1] == "[DONE]"
    assert all("usage" not in e for e in events[:-1])
    assert "".join(e["choices"][0]["text"] for e in events[:-1]) == whole["choices"][0]["text"]


def test_stop_strings_and_length(served, server):
    # Non-sport questions get the base answer "Sure, here is a short answer."
    full = chat(server, served.model_name, OTHER_PROMPT)["choices"][0]["message"]["content"]
    assert "here" in full
    cut = chat(server, served.model_name, OTHER_PROMPT, stop=["nothing", "here"])
    assert cut["choices"][0]["message"]["content"] == full[: full.index("here")]
    assert cut["choices"][0]["finish_reason"] == "stop"
    body = chat_body(served.model_name, OTHER_PROMPT, stop="here", stream=True)
    with httpx.stream("POST", server + "/v1/chat/completions", json=body) as r:
        chunks = sse_events(r)[:-1]
    streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert streamed == full[: full.index("here")]
    short = chat(server, served.model_name, OTHER_PROMPT, max_tokens=3)
    assert short["choices"][0]["finish_reason"] == "length"
    assert short["usage"]["completion_tokens"] == 3


def test_seeded_sampling_is_reproducible_in_any_batch(served, server):
    def sample(seed):
        body = chat_body(served.model_name, OTHER_PROMPT, ["a"], temperature=1.5, seed=seed)
        return httpx.post(server + "/v1/chat/completions", json=body).json()

    first = sample(7)["choices"][0]["message"]["content"]
    # The same seed while other requests share the batch.
    noise = threading.Thread(target=lambda: [chat(server, served.model_name, SPORT_PROMPT)])
    noise.start()
    again = sample(7)["choices"][0]["message"]["content"]
    noise.join()
    assert again == first
    assert any(sample(s)["choices"][0]["message"]["content"] != first for s in range(8, 12))


def wait_for_text(lines) -> str:
    """Read SSE lines until the first chunk that carries generated text; return that text."""
    for line in lines:
        if line.startswith("data: {"):
            text = json.loads(line[6:])["choices"][0]["delta"].get("content")
            if text:
                return text
    raise AssertionError("the stream ended without text")


def slow_down(engine, seconds_per_step: float) -> None:
    """Make each decode step take a while, so a request is surely still running when tested."""
    decode = engine._decode

    def slow():
        time.sleep(seconds_per_step)
        decode()

    engine._decode = slow


def test_disconnect_frees_the_slot(served):
    with running_server(served, max_batch_size=1, max_queue=0) as (url, app):
        engine = app.state.server.engine
        slow_down(engine, 0.01)  # 400 tokens: at least 4 s
        body = chat_body(
            served.model_name, OTHER_PROMPT, max_tokens=400, stream=True, ignore_eos=True
        )
        started = time.monotonic()
        with httpx.stream("POST", url + "/v1/chat/completions", json=body) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            wait_for_text(lines)
            assert engine.running == 1
        while engine.running and time.monotonic() - started < 10:
            time.sleep(0.02)
        assert engine.running == 0
        assert time.monotonic() - started < 3  # freed, not run to the end
        # The one slot is free again: no 429.
        assert chat(url, served.model_name, OTHER_PROMPT)["choices"][0]["finish_reason"]


def test_a_non_streaming_client_that_leaves_frees_its_slot(served):
    with running_server(served, max_batch_size=1, max_queue=0) as (url, app):
        engine = app.state.server.engine
        slow_down(engine, 0.01)  # 400 tokens: at least 4 s
        body = chat_body(served.model_name, OTHER_PROMPT, max_tokens=400, ignore_eos=True)
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(url + "/v1/chat/completions", json=body, timeout=httpx.Timeout(10, read=0.5))
        while engine.running and time.monotonic() - started < 10:
            time.sleep(0.02)
        assert engine.running == 0
        assert time.monotonic() - started < 3  # freed by the disconnect check, not run to the end


def test_admin_changes_apply_to_new_requests_only(served, tmp_path):
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with running_server(served) as (url, app):
        slow_down(app.state.server.engine, 0.005)
        c = make_eraser(served.carrier, tmp_path / "c", "c", seed=3)
        files = {f.name: (f.name, f.read_bytes()) for f in c.iterdir()}
        r = httpx.post(url + "/admin/erasers", files=files, headers=auth)
        assert r.status_code == 201 and r.json()["version"] == 1
        expected = reference(served, [OTHER_PROMPT], ["c"], 200, extra={"c": c})[0]
        body = chat_body(
            served.model_name, OTHER_PROMPT, ["c"], max_tokens=200, stream=True, ignore_eos=True
        )
        with httpx.stream("POST", url + "/v1/chat/completions", json=body) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            first = wait_for_text(lines)
            assert app.state.server.engine.running == 1
            # Removed while the request runs: it finishes with its copy of the eraser.
            d = httpx.delete(url + "/admin/erasers/c", headers=auth)
            assert d.status_code == 200 and d.json()["removed_versions"] == [1]
            again = chat_body(served.model_name, "x", ["c"])
            assert httpx.post(url + "/v1/chat/completions", json=again).status_code == 404
            events = sse_events(lines)
        text = first + "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1])
        assert events[-1] == "[DONE]" and events[-2]["choices"][0]["finish_reason"] == "length"
        # ignore_eos: the offline reply (which stops at EOS) is where it begins.
        assert text.startswith(expected) and len(text) > len(expected)
        r = httpx.post(url + "/admin/erasers", files=files, headers=auth)
        assert r.json()["version"] == 2  # versions are never reused
        listed = httpx.get(url + "/v1/erasers").json()["data"]
        assert {(e["name"], e["version"]) for e in listed} == {("a", 1), ("b", 1), ("c", 2)}
