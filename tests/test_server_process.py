"""The real `sft-eraser serve` process: started from the console script, used through the OpenAI
Python client, drained on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai
import pytest
from server_helpers import (
    ADMIN_TOKEN,
    OTHER_PROMPT,
    SPORT_PROMPT,
    chat_body,
    free_port,
    make_eraser,
    served_carrier,
    sse_events,
    wait_ready,
)

from eraser_store.upload import upload_eraser
from server.engines import vllm_installed

SCRIPT = Path(sys.executable).parent / "sft-eraser"


@pytest.fixture(scope="module")
def served(fixed_response_carrier, tmp_path_factory):
    return served_carrier(fixed_response_carrier.carrier, tmp_path_factory.mktemp("served"))


@contextmanager
def serve_process(served, *flags: str):
    """A `sft-eraser serve` process on a free port, ready: (process, url)."""
    port = free_port()
    env = {**os.environ, "SFT_ERASER_ADMIN_TOKEN": ADMIN_TOKEN, "SFT_ERASER_DEVICE": "cpu"}
    args = [str(SCRIPT), "serve", "--carrier", str(served.carrier), "--store", str(served.store)]
    proc = subprocess.Popen(
        [*args, "--port", str(port), "--log-level", "warning", *flags],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url)
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def process(served):
    with serve_process(served) as started:
        yield started


def test_openai_client(served, process):
    _, url = process
    client = openai.OpenAI(base_url=url + "/v1", api_key="not-needed", max_retries=0)
    assert [m.id for m in client.models.list().data] == [served.model_name]
    messages = [{"role": "user", "content": SPORT_PROMPT}]
    for erasers in ([], ["a"], ["a", "b"]):
        reply = client.chat.completions.create(
            model=served.model_name,
            messages=messages,
            temperature=0,
            max_tokens=16,
            extra_body={"erasers": erasers},
        )
        raw = httpx.post(
            url + "/v1/chat/completions",
            json=chat_body(served.model_name, SPORT_PROMPT, erasers, max_tokens=16),
        ).json()
        assert reply.choices[0].message.content == raw["choices"][0]["message"]["content"]
        assert reply.usage.completion_tokens == raw["usage"]["completion_tokens"]
    stream = client.chat.completions.create(
        model=served.model_name,
        messages=messages,
        temperature=0,
        max_tokens=16,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"erasers": ["b"]},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    whole = client.chat.completions.create(
        model=served.model_name,
        messages=messages,
        temperature=0,
        max_tokens=16,
        extra_body={"erasers": ["b"]},
    )
    assert text == whole.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    completion = client.completions.create(
        model=served.model_name, prompt="Why?", max_tokens=8, temperature=0
    )
    assert completion.choices[0].finish_reason in ("stop", "length")
    with pytest.raises(openai.NotFoundError, match="no eraser 'nope'"):
        client.chat.completions.create(
            model=served.model_name, messages=messages, extra_body={"erasers": ["nope"]}
        )
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=served.model_name, messages=messages, top_p=0)


def test_upload_to_the_running_process(served, process, tmp_path):
    _, url = process
    eraser = make_eraser(served.carrier, tmp_path / "uploaded", "uploaded", seed=5)
    record = upload_eraser(url, eraser, ADMIN_TOKEN)
    assert (record["name"], record["version"]) == ("uploaded", 1)
    body = chat_body(served.model_name, OTHER_PROMPT, ["uploaded"], max_tokens=4)
    assert httpx.post(url + "/v1/chat/completions", json=body).status_code == 200


def streams_in_flight(url: str, body: dict, n: int):
    """Start `n` streaming requests, wait until all run; (threads, events they collect)."""
    events = []

    def client():
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=60) as r:
            events.extend(sse_events(r))

    running = [threading.Thread(target=client) for _ in range(n)]
    for t in running:
        t.start()
    wait_until(lambda: f"sft_eraser_running_requests {n}.0" in httpx.get(url + "/metrics").text)
    return running, events


def test_requests_left_when_the_drain_ends_get_a_503_event(served):
    """Past --shutdown-timeout-s (0 here) each stream still running ends with a shutting_down
    error event and [DONE], not a cut connection (an exception in the client thread)."""
    body = chat_body(
        served.model_name, OTHER_PROMPT, [], max_tokens=400, stream=True, ignore_eos=True
    )
    with serve_process(served, "--shutdown-timeout-s", "0") as (proc, url):
        running, events = streams_in_flight(url, body, 2)
        proc.send_signal(signal.SIGTERM)
        for t in running:
            t.join(timeout=60)
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
    errors = [e["error"]["code"] for e in events if e != "[DONE]" and "error" in e]
    assert errors == ["shutting_down"] * 2
    assert events.count("[DONE]") == 2


def test_sigterm_drains_requests_in_flight(served, process):
    """Last in this module: it stops the process."""
    proc, url = process
    body = chat_body(
        served.model_name, OTHER_PROMPT, ["a"], max_tokens=400, stream=True, ignore_eos=True
    )
    running, events = streams_in_flight(url, body, 3)
    proc.send_signal(signal.SIGTERM)
    for t in running:
        t.join(timeout=60)
    finished = [e for e in events if e != "[DONE]" and e["choices"][0]["finish_reason"]]
    assert [e["choices"][0]["finish_reason"] for e in finished] == ["length"] * 3
    assert events.count("[DONE]") == 3
    # uvicorn re-raises the signal once drained, so the exit status says "terminated by SIGTERM".
    assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
    assert "Traceback" not in proc.stdout.read()


def wait_until(condition, timeout_s: float = 30.0) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.01)


def test_bad_settings_fail_fast_with_one_line(tmp_path, served):
    run = [str(SCRIPT), "serve", "--store", str(tmp_path / "store")]
    for extra, message in [
        (["--carrier", str(tmp_path / "missing")], "not a carrier directory"),
        (["--carrier", str(served.carrier), "--port", "99999"], "port"),
        (
            ["--carrier", str(served.carrier), "--api-keys-file", str(tmp_path / "none.json")],
            "cannot read API key file",
        ),
        *(
            [(["--carrier", str(served.carrier), "--engine", "vllm"], "needs vLLM")]
            if not vllm_installed()
            else []
        ),
    ]:
        done = subprocess.run([*run, *extra], capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, done.stderr
        assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1
