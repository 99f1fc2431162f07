"""The server's HTTP surface over real HTTP: auth, admin, limits, bad input, probes, a failed load.

Every error must come back with its exact status and the OpenAI shape
`{"error": {"message", "type", "param", "code"}}`; no bad input may produce a 500.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import torch
from server_helpers import (
    ADMIN,
    ADMIN_TOKEN,
    APP_KEY,
    OTHER_PROMPT,
    RED_KEY,
    SPORT_PROMPT,
    assert_error,
    bearer,
    chat_body,
    eraser_files,
    metric,
    metric_samples,
    running_server,
    served_carrier,
    sse_events,
)

from eraser_store import carrier_ref, read_eraser, write_eraser
from eraser_store.format import FILES, WEIGHTS_FILE
from eraser_store.upload import UploadError, upload_eraser
from server import serving

CHAT = "/v1/chat/completions"
TEXT = "/v1/completions"
ERASERS = "/admin/erasers"
SHORT = "hi"  # a chat prompt of about 21 tokens
LONG_TOKENS = 450  # with ignore_eos and slow_decode: at least 1.8 s


def foreign_eraser(carrier, out, *, fingerprint: str = "sha256:another-carrier", hidden=None):
    """An eraser-shaped soft prompt trained (supposedly) against another carrier."""
    config = json.loads((carrier / "config.json").read_text())
    hidden = hidden or carrier_ref(carrier).hidden_size
    return write_eraser(
        out,
        torch.randn(3, hidden, generator=torch.Generator().manual_seed(7)),
        name="foreign",
        behavior="fixed_response",
        carrier_fingerprint=fingerprint,
        num_layers=config["num_hidden_layers"],
        num_attention_heads=config["num_attention_heads"],
        channel_count=0,
        training={},
    )


def slow_decode(app, seconds_per_step: float = 0.004) -> None:
    """Each decode step takes at least this long: a long reply surely outlasts the test's timing,
    however fast the machine."""
    engine = app.state.server.engine
    decode = engine._decode

    def slow():
        time.sleep(seconds_per_step)
        decode()

    engine._decode = slow


def wait_for(condition, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


# ---- servers


@pytest.fixture(scope="module")
def served(fixed_response_carrier, tmp_path_factory):
    """Carrier + store with erasers "a" and "b"; nothing here changes the store."""
    return served_carrier(fixed_response_carrier.carrier, tmp_path_factory.mktemp("served"))


@pytest.fixture(scope="module")
def mutable_served(fixed_response_carrier, tmp_path_factory):
    """The same, for the servers whose tests add and remove erasers."""
    return served_carrier(fixed_response_carrier.carrier, tmp_path_factory.mktemp("mutable"))


@pytest.fixture(scope="module")
def server(served):
    with running_server(served) as (url, app):
        yield url


@pytest.fixture(scope="module")
def keyed(served):
    with running_server(served, api_keys_file=served.keys_file) as (url, app):
        yield url


@pytest.fixture(scope="module")
def admin_server(mutable_served):
    with running_server(mutable_served) as (url, app):
        yield url


@pytest.fixture(scope="module")
def limited(mutable_served):
    settings = dict(
        max_prompt_tokens=32,
        max_tokens_limit=LONG_TOKENS,
        default_max_tokens=16,
        max_erasers_per_request=1,
        max_body_bytes=2048,
        request_timeout_s=0.5,
    )
    with running_server(mutable_served, **settings) as (url, app):
        slow_decode(app)
        yield url, app


@pytest.fixture
def model(served) -> str:
    return served.model_name


# ---- auth


def test_keys_are_required_and_checked(keyed, model):
    body = chat_body(model, OTHER_PROMPT)
    for headers in ({}, bearer("sk-wrong-0123456789"), {"Authorization": f"Basic {APP_KEY}"}):
        r = httpx.post(keyed + CHAT, json=body, headers=headers)
        assert_error(r, 401, type="authentication_error", code="invalid_api_key", param=None)
        assert r.headers["www-authenticate"] == "Bearer"
    for path in ("/v1/models", "/v1/erasers"):
        assert_error(httpx.get(keyed + path), 401, type="authentication_error")
    r = httpx.get(keyed + "/v1/models", headers=bearer(APP_KEY))
    assert r.status_code == 200 and [m["id"] for m in r.json()["data"]] == [model]
    # The probes need no key.
    for path in ("/health", "/ready", "/metrics"):
        assert httpx.get(keyed + path).status_code == 200


def test_a_key_may_use_only_its_erasers_and_nothing_runs_otherwise(keyed, model):
    generated = metric(keyed, "sft_eraser_generated_tokens_total")
    uses_of_a = metric(keyed, "sft_eraser_eraser_requests_total", eraser="a")
    for erasers, index in ((["a"], 0), (["b", "a"], 1), (["zzz"], 0)):
        # An unknown eraser is refused like a forbidden one: a key learns nothing about others.
        r = httpx.post(
            keyed + CHAT, json=chat_body(model, OTHER_PROMPT, erasers), headers=bearer(APP_KEY)
        )
        assert_error(r, 403, type="permission_error", code="forbidden", param=f"erasers[{index}]")
    assert metric(keyed, "sft_eraser_generated_tokens_total") == generated
    assert metric(keyed, "sft_eraser_eraser_requests_total", eraser="a") == uses_of_a

    r = httpx.post(
        keyed + CHAT, json=chat_body(model, OTHER_PROMPT, ["b"]), headers=bearer(APP_KEY)
    )
    assert r.status_code == 200, r.text
    assert r.json()["erasers"] == ["b@1"]
    after_b = metric(keyed, "sft_eraser_generated_tokens_total")
    assert after_b == generated + r.json()["usage"]["completion_tokens"] > generated

    r = httpx.post(
        keyed + CHAT, json=chat_body(model, OTHER_PROMPT, ["a", "b"]), headers=bearer(RED_KEY)
    )
    assert r.status_code == 200, r.text
    assert r.json()["erasers"] == ["a@1", "b@1"]
    assert metric(keyed, "sft_eraser_eraser_requests_total", eraser="a") == uses_of_a + 1


def test_eraser_listing_shows_only_what_the_key_may_use(keyed):
    def names(key):
        r = httpx.get(keyed + "/v1/erasers", headers=bearer(key))
        assert r.status_code == 200, r.text
        return [e["name"] for e in r.json()["data"]]

    assert names(APP_KEY) == ["b"]
    assert names(RED_KEY) == ["a", "b"]


def test_without_a_key_file_no_key_is_needed(server, model):
    r = httpx.post(server + CHAT, json=chat_body(model, OTHER_PROMPT, ["a"]))
    assert r.status_code == 200, r.text
    # A stray Authorization header is ignored, not checked.
    r = httpx.get(server + "/v1/erasers", headers=bearer("anything-at-all"))
    assert r.status_code == 200 and [e["name"] for e in r.json()["data"]] == ["a", "b"]
    assert httpx.get(server + "/v1/models").status_code == 200


# ---- admin


def test_admin_routes_need_the_admin_token(admin_server, served):
    def registered():
        r = httpx.get(admin_server + "/v1/erasers", params={"all_versions": "true"})
        return [(e["name"], e["version"]) for e in r.json()["data"]]

    before = registered()
    assert ("a", 1) in before
    files = eraser_files(served.erasers["a"])
    for headers in ({}, bearer("wrong-admin-token"), bearer(APP_KEY)):
        r = httpx.post(admin_server + ERASERS, files=files, data={"name": "t"}, headers=headers)
        assert_error(r, 401, type="authentication_error")
        assert r.headers["www-authenticate"] == "Bearer"
        r = httpx.delete(admin_server + ERASERS + "/a", headers=headers)
        assert_error(r, 401, type="authentication_error")
    assert registered() == before  # nothing was added or removed


def test_admin_routes_are_off_without_an_admin_token(served):
    with running_server(served, admin_token=None) as (url, app):
        r = httpx.post(url + ERASERS, files=eraser_files(served.erasers["a"]), headers=ADMIN)
        assert_error(r, 404, type="not_found_error", code="admin_disabled")
        r = httpx.delete(url + ERASERS + "/a", headers=ADMIN)
        assert_error(r, 404, type="not_found_error", code="admin_disabled")
        assert httpx.get(url + "/v1/erasers").json()["data"][0]["name"] == "a"


def test_upload_refuses_malformed_requests(admin_server, served):
    files = eraser_files(served.erasers["a"])
    partial = {f: v for f, v in files.items() if f != WEIGHTS_FILE}
    r = httpx.post(admin_server + ERASERS, files=partial, headers=ADMIN)
    err = assert_error(r, 400, type="invalid_request_error", param=WEIGHTS_FILE)
    assert WEIGHTS_FILE in err["message"]
    # The files as plain form fields, not file parts.
    fields = {f: v[1].decode("latin-1") for f, v in files.items()}
    r = httpx.post(admin_server + ERASERS, data=fields, headers=ADMIN)
    assert_error(r, 400, type="invalid_request_error")
    r = httpx.post(admin_server + ERASERS, json={"files": list(FILES)}, headers=ADMIN)
    err = assert_error(r, 400, type="invalid_request_error")
    assert "multipart/form-data" in err["message"]
    r = httpx.post(admin_server + ERASERS, files=files, data={"force": "maybe"}, headers=ADMIN)
    assert_error(r, 400, param="force")
    for bad_name in ("bad name", "../escape", "-dash-first", "x" * 65):
        r = httpx.post(admin_server + ERASERS, files=files, data={"name": bad_name}, headers=ADMIN)
        err = assert_error(r, 400, type="invalid_request_error", param="name")
        assert "upload-" not in err["message"]  # no server paths


def test_upload_refuses_a_corrupted_eraser(admin_server, served):
    files = eraser_files(served.erasers["a"])
    weights = bytearray(files[WEIGHTS_FILE][1])
    weights[-1] ^= 0xFF  # the sidecar's sha256 no longer matches
    files[WEIGHTS_FILE] = (WEIGHTS_FILE, bytes(weights))
    r = httpx.post(admin_server + ERASERS, files=files, data={"name": "corrupt"}, headers=ADMIN)
    err = assert_error(r, 422, type="invalid_request_error", code="invalid_eraser")
    assert "corrupted" in err["message"]
    assert tempfile.gettempdir() not in err["message"]  # the server's upload directory is not
    r = httpx.get(admin_server + "/v1/erasers")
    assert "corrupt" not in [e["name"] for e in r.json()["data"]]


def test_upload_of_an_eraser_for_another_carrier(admin_server, served, tmp_path):
    foreign = foreign_eraser(served.carrier, tmp_path / "foreign")
    r = httpx.post(admin_server + ERASERS, files=eraser_files(foreign), headers=ADMIN)
    assert_error(r, 409, type="conflict_error", code="carrier_mismatch")
    r = httpx.post(
        admin_server + ERASERS,
        files=eraser_files(foreign),
        data={"force": "true", "name": "foreign-forced"},
        headers=ADMIN,
    )
    assert r.status_code == 201, r.text
    record = r.json()
    assert record["name"] == "foreign-forced" and record["version"] == 1
    assert record["carrier_fingerprint"] == "sha256:another-carrier"
    # A hidden-size mismatch cannot be forced.
    narrow = foreign_eraser(served.carrier, tmp_path / "narrow", hidden=16)
    r = httpx.post(
        admin_server + ERASERS, files=eraser_files(narrow), data={"force": "true"}, headers=ADMIN
    )
    assert_error(r, 409, code="carrier_mismatch")


def test_upload_through_the_client(admin_server, served, tmp_path):
    record = upload_eraser(admin_server, served.erasers["b"], ADMIN_TOKEN, name="via-client")
    assert record["name"] == "via-client" and record["version"] == 1
    meta = read_eraser(served.erasers["b"]).meta
    assert record["tokens"] == meta.num_virtual_tokens and record["sha256"] == meta.sha256
    assert record["behavior"] == "fixed_response"
    foreign = foreign_eraser(served.carrier, tmp_path / "foreign")
    with pytest.raises(UploadError, match="409.*another-carrier"):
        upload_eraser(admin_server, foreign, ADMIN_TOKEN, name="foreign-client")
    with pytest.raises(UploadError, match="401"):
        upload_eraser(admin_server, foreign, "not-the-token", name="foreign-client")
    record = upload_eraser(admin_server, foreign, ADMIN_TOKEN, name="foreign-client", force=True)
    assert record["version"] == 1


def test_versions_grow_and_are_never_reused(admin_server, served):
    def upload(name):
        r = httpx.post(
            admin_server + ERASERS,
            files=eraser_files(served.erasers["a"]),
            data={"name": name},
            headers=ADMIN,
        )
        assert r.status_code == 201, r.text
        return r.json()["version"]

    model = served.model_name
    assert upload("c") == 1
    r = httpx.post(admin_server + CHAT, json=chat_body(model, OTHER_PROMPT, ["c"]))
    assert r.status_code == 200 and r.json()["erasers"] == ["c@1"]
    r = httpx.delete(admin_server + ERASERS + "/c", headers=ADMIN)
    assert r.status_code == 200 and r.json() == {"name": "c", "removed_versions": [1]}
    r = httpx.post(admin_server + CHAT, json=chat_body(model, OTHER_PROMPT, ["c"]))
    assert_error(r, 404, code="eraser_not_found", param="erasers[0]")
    assert upload("c") == 2
    assert upload("c") == 3
    r = httpx.post(admin_server + CHAT, json=chat_body(model, OTHER_PROMPT, ["c@1"]))
    assert_error(r, 404, code="eraser_not_found", param="erasers[0]")
    r = httpx.delete(admin_server + ERASERS + "/c@2", headers=ADMIN)
    assert r.status_code == 200 and r.json()["removed_versions"] == [2]
    r = httpx.get(admin_server + "/v1/erasers", params={"all_versions": "true"})
    assert [e["version"] for e in r.json()["data"] if e["name"] == "c"] == [3]
    r = httpx.delete(admin_server + ERASERS + "/c@2", headers=ADMIN)
    assert_error(r, 404, type="not_found_error", code="eraser_not_found")
    assert httpx.delete(admin_server + ERASERS + "/c", headers=ADMIN).status_code == 200


def test_delete_refuses_unknown_and_bad_references(admin_server):
    r = httpx.delete(admin_server + ERASERS + "/no-such-eraser", headers=ADMIN)
    assert_error(r, 404, type="not_found_error", code="eraser_not_found")
    for ref in ("x@notanumber", "x@0", "x@-1", "bad name"):
        r = httpx.delete(admin_server + ERASERS + "/" + ref, headers=ADMIN)
        assert_error(r, 400, type="invalid_request_error", param="ref")


# ---- limits


def test_prompt_and_token_limits(limited, model):
    url, _ = limited
    r = httpx.post(url + CHAT, json=chat_body(model, SPORT_PROMPT))
    assert_error(r, 400, code="context_length_exceeded", param="messages")
    r = httpx.post(url + TEXT, json={"model": model, "prompt": "y" * 40})
    assert_error(r, 400, code="context_length_exceeded", param="prompt")
    for field in ("max_tokens", "max_completion_tokens"):
        r = httpx.post(url + CHAT, json=chat_body(model, SHORT, **{field: LONG_TOKENS + 1}))
        err = assert_error(r, 400, type="invalid_request_error", param="max_tokens")
        assert str(LONG_TOKENS) in err["message"]
    r = httpx.post(url + CHAT, json=chat_body(model, SHORT, ["a", "b"], max_tokens=2))
    assert_error(r, 400, type="invalid_request_error", param="erasers")
    r = httpx.post(url + CHAT, json=chat_body(model, SHORT, ["a"], max_tokens=2))
    assert r.status_code == 200, r.text


def test_the_models_context_bounds_max_tokens(server, model):
    # The tiny carrier has 512 positions: prompt + 500 new tokens do not fit.
    r = httpx.post(server + CHAT, json=chat_body(model, OTHER_PROMPT, max_tokens=500))
    assert_error(r, 400, code="context_length_exceeded", param="max_tokens")


def test_body_size_limit(limited, model):
    url, _ = limited
    body = json.dumps(chat_body(model, "x" * 3000)).encode()
    refused = metric(url, "sft_eraser_requests_total", route="unmatched", status="413")
    errors_before = metric(url, "sft_eraser_errors_total", type="invalid_request_error")
    r = httpx.post(url + CHAT, content=body, headers={"content-type": "application/json"})
    assert r.request.headers["content-length"] == str(len(body))
    assert_error(r, 413, type="invalid_request_error", code="request_too_large")
    # Refused before routing, and still counted.
    assert metric(url, "sft_eraser_requests_total", route="unmatched", status="413") == refused + 1
    assert metric(url, "sft_eraser_errors_total", type="invalid_request_error") == errors_before + 1

    def chunks():
        for i in range(0, len(body), 500):
            yield body[i : i + 500]

    r = httpx.post(url + CHAT, content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in r.request.headers
    assert r.request.headers["transfer-encoding"] == "chunked"
    assert_error(r, 413, type="invalid_request_error", code="request_too_large")
    # A chunked body under the limit is read in full.
    small = json.dumps(chat_body(model, SHORT, max_tokens=2)).encode()
    r = httpx.post(
        url + CHAT,
        content=(small[i : i + 50] for i in range(0, len(small), 50)),
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 200, r.text


def test_uploads_have_their_own_body_limit(limited, served):
    url, _ = limited
    files = eraser_files(served.erasers["a"])
    assert sum(len(v[1]) for v in files.values()) > 2048  # over the inference limit
    r = httpx.post(url + ERASERS, files=files, data={"name": "big-upload"}, headers=ADMIN)
    assert r.status_code == 201, r.text
    assert httpx.delete(url + ERASERS + "/big-upload", headers=ADMIN).status_code == 200


def test_queue_full_is_429_with_retry_after(served, model, monkeypatch):
    with running_server(served, max_batch_size=1, max_queue=0) as (url, app):
        slow_decode(app)
        engine = app.state.server.engine
        long_body = chat_body(model, SHORT, max_tokens=200, ignore_eos=True)  # 0.8 s at least
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(httpx.post, url + CHAT, json=long_body, timeout=60)
            wait_for(lambda: engine.running == 1 or first.done())
            assert not first.done(), "the first request ended before the second was sent"
            # Refused before any store look-up or tokenizing: a full server does no work.
            with monkeypatch.context() as m:
                m.setattr(serving, "prepare", lambda *a: pytest.fail("prepared a refused request"))
                r = httpx.post(url + CHAT, json=chat_body(model, SHORT, max_tokens=2))
            assert_error(r, 429, type="rate_limit_error", code="queue_full")
            assert int(r.headers["retry-after"]) >= 1
            done = first.result()
        assert done.status_code == 200, done.text
        assert done.json()["usage"]["completion_tokens"] == 200
        assert done.json()["choices"][0]["finish_reason"] == "length"
        assert metric(url, "sft_eraser_errors_total", type="rate_limit_error") == 1
        # The slot is free again.
        assert httpx.post(url + CHAT, json=chat_body(model, SHORT, max_tokens=2)).status_code == 200


def test_a_request_past_the_timeout_is_504_and_stops(limited, model):
    url, app = limited
    engine = app.state.server.engine
    started = time.monotonic()
    r = httpx.post(
        url + CHAT,
        json=chat_body(model, SHORT, max_tokens=LONG_TOKENS, ignore_eos=True),
        timeout=30,
    )
    assert_error(r, 504, type="server_error", code="timeout")
    assert time.monotonic() - started < 2.0
    wait_for(lambda: engine.running == 0 and engine.waiting == 0)


def test_a_stream_past_the_timeout_ends_with_an_error_event(limited, model):
    url, app = limited
    engine = app.state.server.engine
    body = chat_body(model, SHORT, max_tokens=LONG_TOKENS, stream=True, ignore_eos=True)
    with httpx.stream("POST", url + CHAT, json=body, timeout=30) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r)
    assert events[-1] == "[DONE]"
    error = events[-2]["error"]
    assert error["type"] == "server_error" and error["code"] == "timeout"
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all("choices" in e for e in events[:-2])  # chunks, then the error: none finished
    assert not any(e["choices"][0]["finish_reason"] for e in events[:-2])
    wait_for(lambda: engine.running == 0 and engine.waiting == 0)


# ---- bad input


def test_malformed_json(server, model):
    for raw in (b'{"model": ', b"{'model': 1}", b"\xff\xfe"):
        r = httpx.post(server + CHAT, content=raw, headers={"content-type": "application/json"})
        assert_error(r, 400, type="invalid_request_error", code="invalid_json")


@pytest.mark.parametrize(
    "change, param",
    [
        ({"messages": [{"role": "user", "content": 5}]}, "messages.0.content"),
        ({"temperature": "hot"}, "temperature"),
        ({"temperature": 2.5}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"eraser": ["a"]}, "eraser"),
        ({"n": 2}, "n"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"stop": [""]}, "stop"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages.0.role"),
        ({"erasers": "a"}, "erasers"),
        ({"stream": "maybe"}, "stream"),
        ({"model": None}, "model"),
    ],
)
def test_invalid_fields_name_the_param(server, model, change, param):
    r = httpx.post(server + CHAT, json=chat_body(model, OTHER_PROMPT) | change)
    err = assert_error(r, 400, type="invalid_request_error")
    assert err["param"] == param or err["param"].startswith(param + "."), err


def test_unknown_model_and_erasers(server, model):
    r = httpx.post(server + CHAT, json=chat_body("gpt-4", OTHER_PROMPT))
    err = assert_error(r, 404, type="not_found_error", code="model_not_found", param="model")
    assert model in err["message"]
    r = httpx.post(server + CHAT, json=chat_body(model, OTHER_PROMPT, ["nope"]))
    assert_error(r, 404, type="not_found_error", code="eraser_not_found", param="erasers[0]")
    r = httpx.post(server + CHAT, json=chat_body(model, OTHER_PROMPT, ["a", "b@7"]))
    assert_error(r, 404, code="eraser_not_found", param="erasers[1]")
    for ref in ("A B", "a@0", "a@x", ""):
        r = httpx.post(server + CHAT, json=chat_body(model, OTHER_PROMPT, [ref]))
        assert_error(r, 400, type="invalid_request_error", param="erasers[0]")


def test_unknown_routes_and_methods(server):
    r = httpx.get(server + "/v1/nothing-here")
    assert_error(r, 404, type="not_found_error")
    r = httpx.get(server + CHAT)
    assert_error(r, 405, type="invalid_request_error")
    assert r.headers["allow"] == "POST"
    r = httpx.put(server + "/health")
    assert_error(r, 405)
    assert r.headers["allow"] == "GET"


def test_no_bad_input_is_a_server_error(server, model):
    good = chat_body(model, OTHER_PROMPT, max_tokens=2)
    bodies = [
        [],
        "a string",
        None,
        42,
        {},
        good | {"messages": [{"role": "user"}]},
        good | {"messages": [{"role": "user", "content": [{"type": "image", "url": "x"}]}]},
        good | {"messages": [{"role": "user", "content": "x", "extra": 1}]},
        good | {"messages": "hello"},
        good | {"max_tokens": 10**30},
        good | {"max_tokens": -1},
        good | {"max_tokens": 1.5},
        good | {"seed": "x"},
        good | {"erasers": [1]},
        good | {"erasers": [None]},
        good | {"erasers": ["a"] * 100},
        good | {"erasers": ["a" * 1000]},
        good | {"stream_options": {"include_usage": "maybe"}},
        good | {"stop": 5},
        # Python's JSON reader takes NaN and Infinity: they must not reach the sampler.
        good | {"temperature": float("nan")},
        good | {"temperature": float("inf")},
        good | {"top_p": float("nan")},
        good | {"top_p": float("-inf")},
    ]
    text_bodies = [
        {"model": model, "prompt": ""},
        {"model": model, "prompt": ["one", "two"]},
        {"model": model, "prompt": []},
        {"model": model},
        {"model": model, "prompt": "x", "messages": []},
    ]
    for path, payloads in ((CHAT, bodies), (TEXT, text_bodies)):
        for payload in payloads:
            r = httpx.post(
                server + path,
                content=json.dumps(payload).encode(),
                headers={"content-type": "application/json"},
            )
            assert 400 <= r.status_code < 500, (payload, r.status_code, r.text)
            assert_error(r, r.status_code)
    # Not JSON by its content type; an empty body.
    r = httpx.post(server + CHAT, content=json.dumps(good), headers={"content-type": "text/plain"})
    assert_error(r, 400)
    r = httpx.post(server + CHAT, content=b"", headers={"content-type": "application/json"})
    assert_error(r, 400)
    assert metric(server, "sft_eraser_errors_total", type="server_error") == 0


def test_a_tiny_temperature_is_greedy_and_harms_no_one(server, model):
    """1e-30 would overflow logits / temperature; it must neither fail the request nor the
    batch it shares (a sampling error on the engine thread fails every row of the step)."""
    greedy = chat_body(model, OTHER_PROMPT, max_tokens=8)
    with ThreadPoolExecutor(4) as pool:
        tiny = pool.submit(
            httpx.post, server + CHAT, json=greedy | {"temperature": 1e-30}, timeout=60
        )
        others = [pool.submit(httpx.post, server + CHAT, json=greedy, timeout=60) for _ in range(3)]
        replies = [f.result() for f in [tiny, *others]]
    assert all(r.status_code == 200 for r in replies), [r.text for r in replies]
    texts = {r.json()["choices"][0]["message"]["content"] for r in replies}
    assert len(texts) == 1  # all greedy


# ---- probes


def test_probes_and_metrics(server, model):
    assert httpx.get(server + "/health").json() == {"status": "ok"}
    r = httpx.get(server + "/ready")
    assert r.status_code == 200 and r.json() == {"status": "ready", "model": model}
    assert httpx.post(server + CHAT, json=chat_body(model, OTHER_PROMPT, ["a"])).status_code == 200
    r = httpx.get(server + "/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    samples = metric_samples(server)
    names = {name for name, _ in samples}
    for name in (
        "sft_eraser_requests_total",
        "sft_eraser_errors_total",
        "sft_eraser_queue_depth",
        "sft_eraser_running_requests",
        "sft_eraser_time_to_first_token_seconds_count",
        "sft_eraser_generated_tokens_total",
        "sft_eraser_eraser_requests_total",
    ):
        assert name in names, name
    assert samples[("sft_eraser_eraser_requests_total", (("eraser", "a"),))] >= 1
    assert samples[("sft_eraser_requests_total", (("route", CHAT), ("status", "200")))] >= 1
    assert samples[("sft_eraser_time_to_first_token_seconds_count", ())] >= 1
    assert samples[("sft_eraser_generated_tokens_total", ())] >= 1
    assert samples[("sft_eraser_queue_depth", ())] == 0
    assert samples[("sft_eraser_running_requests", ())] == 0


def test_a_carrier_that_cannot_load(served, tmp_path):
    broken = tmp_path / "broken-carrier"
    shutil.copytree(served.carrier, broken)
    (broken / "model.safetensors").write_bytes(b"\x00garbage, not safetensors" * 64)
    with running_server(dataclasses.replace(served, carrier=broken), expect_ready=503) as (url, _):
        r = httpx.get(url + "/health")
        assert r.status_code == 503 and r.json()["status"] == "failed"
        r = httpx.get(url + "/ready")
        assert r.status_code == 503
        assert r.json()["status"] == "failed" and r.json()["error"]
        r = httpx.post(url + CHAT, json=chat_body(broken.name, OTHER_PROMPT))
        err = assert_error(r, 503, type="server_error", code="failed")
        assert "failed to load" in err["message"]
        assert "retry-after" not in r.headers  # no wait repairs it
        r = httpx.post(url + TEXT, json={"model": broken.name, "prompt": "x"})
        assert_error(r, 503, code="failed")
