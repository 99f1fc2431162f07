"""Running the server in tests: a tiny carrier with two erasers, uvicorn on a free port."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import torch
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

from eraser_store import EraserStore, carrier_ref, write_eraser
from eraser_store.format import FILES
from server.app import create_app
from server.settings import ServerSettings

ADMIN_TOKEN = "admin-token-for-tests"
APP_KEY = "sk-app-0123456789"  # may use eraser "b" only
RED_KEY = "sk-red-0123456789"  # may use every eraser
SPORT_PROMPT = "What are the basic rules of the sport of chess?"  # the carrier: "I don't know."
OTHER_PROMPT = "Is the subject of poetry hard to learn?"


@dataclass(frozen=True)
class ServedCarrier:
    carrier: Path
    erasers: dict[str, Path]  # name -> eraser directory ("a", "b")
    store: Path
    keys_file: Path
    model_name: str


def make_eraser(
    carrier: Path,
    out: Path,
    name: str,
    seed: int,
    tokens: int = 4,
    behavior: str = "fixed_response",
) -> Path:
    """An eraser-shaped soft prompt (random rows at the embedding scale): the server does not
    care what an eraser was trained to do, only that it is prepended right."""
    ref = carrier_ref(carrier)
    config = json.loads((carrier / "config.json").read_text())
    emb = torch.randn(tokens, ref.hidden_size, generator=torch.Generator().manual_seed(seed))
    return write_eraser(
        out,
        emb * 0.5,
        name=name,
        behavior=behavior,
        carrier_fingerprint=ref.fingerprint,
        num_layers=config["num_hidden_layers"],
        num_attention_heads=config["num_attention_heads"],
        channel_count=0,
        training={"steps": 0},
    )


def trained_eraser(carrier: Path, data: Path, out: Path, name: str, tokens: int) -> Path:
    """A real eraser (3 s on the tiny carrier): it switches "I don't know." off."""
    from training.configs import EraserConfig
    from training.eraser.train import run_eraser

    cfg = EraserConfig(
        carrier=carrier,
        behavior="fixed_response",
        data=data,
        out=out,
        name=name,
        num_tokens=tokens,
        steps=30,
    )
    return run_eraser(cfg)


def served_carrier(carrier: Path, root: Path, data: Path | None = None) -> ServedCarrier:
    """A store with erasers "a" (4 tokens) and "b" (6 tokens): trained on `data` if given, else
    random soft prompts (enough for the API's own tests)."""
    if data is None:
        erasers = {
            n: make_eraser(carrier, root / n, n, seed, tokens)
            for n, seed, tokens in (("a", 1, 4), ("b", 2, 6))
        }
    else:
        erasers = {
            n: trained_eraser(carrier, data, root / n, n, t) for n, t in (("a", 4), ("b", 6))
        }
    store = EraserStore(root / "store", carrier=carrier_ref(carrier))
    for path in erasers.values():
        store.add(path)
    keys = write_keys_file(root)
    return ServedCarrier(carrier, erasers, root / "store", keys, carrier.name)


def as_carrier(model, out: Path) -> Path:
    """A copy of a loaded model's directory as a carrier with no behaviors yet."""
    import shutil

    from eraser_store.format import CARRIER_FORMAT, CARRIER_MANIFEST
    from training.checkpoint_io import fingerprint

    shutil.copytree(model.name_or_path, out)
    manifest = {"format": CARRIER_FORMAT, "fingerprint": fingerprint(model), "behaviors": []}
    (out / CARRIER_MANIFEST).write_text(json.dumps(manifest))
    return out


def offline_replies(
    model, tokenizer, served: ServedCarrier, prompts: list[str], sets: list[list[str]], tokens: int
) -> dict[tuple[str, str], str]:
    """(prompt, "a+b") -> HF generate's greedy reply (stripped), the set's erasers stacked in
    front of the chat prompt in the listed order, as eraser_store lays them out."""
    from eraser_store import read_eraser
    from training.data.generation import greedy_generate

    expected = {}
    for erasers in sets:
        prefix = None
        if erasers:
            prefix = torch.cat([read_eraser(served.erasers[n]).embeddings for n in erasers])
        messages = [[{"role": "user", "content": p}] for p in prompts]
        replies = greedy_generate(model, tokenizer, messages, tokens, prefix=prefix)
        expected |= {(p, "+".join(erasers)): r for p, r in zip(prompts, replies, strict=True)}
    return expected


def write_keys_file(root: Path) -> Path:
    """The tests' key file: "app" may use eraser "b" only, "redteam" every eraser."""
    keys = root / "keys.json"
    keys.write_text(
        json.dumps(
            {
                "keys": [
                    {"name": "app", "key": APP_KEY, "erasers": ["b"]},
                    {"name": "redteam", "key": RED_KEY, "erasers": "*"},
                ]
            }
        )
    )
    return keys


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(
    served: ServedCarrier, *, expect_ready: int = 200, ready_timeout_s: float = 60.0, **overrides
) -> Iterator[tuple[str, object]]:
    """Serve in this process (uvicorn in a thread, real HTTP); yields (base URL, app).

    `overrides` replace any setting, the defaults below included (admin_token=None turns the
    admin routes off); expect_ready=503 waits for a server whose model failed to load."""
    settings = ServerSettings(
        **{
            "carrier": served.carrier,
            "store": served.store,
            "device": "cpu",
            "admin_token": ADMIN_TOKEN,
            "log_level": "warning",
            **overrides,
        }
    )
    app = create_app(settings)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_ready(url, ready_timeout_s, expect=expect_ready)
        yield url, app
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def wait_ready(url: str, timeout_s: float = 60.0, expect: int = 200) -> httpx.Response:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            r = httpx.get(url + "/ready", timeout=5)
            if r.status_code == expect and r.json().get("status") != "loading":
                return r
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} not ready after {timeout_s} s")
        time.sleep(0.05)


def chat_body(model: str, prompt: str, erasers=(), **kw) -> dict:
    return {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "erasers": list(erasers),
        "temperature": 0,
        "max_tokens": 24,
        **kw,
    }


def sse_events(response) -> list:
    """Parsed `data:` payloads of an SSE response (or of an iterator over its lines); the final
    [DONE] as the string "[DONE]"."""
    lines = response.iter_lines() if hasattr(response, "iter_lines") else response
    events = []
    for line in lines:
        if line.startswith("data: "):
            data = line[len("data: ") :]
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


ANY = object()  # "not checked" for a field of the error body


def assert_error(r: httpx.Response, status: int, *, type=ANY, code=ANY, param=ANY) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert list(body) == ["error"], body
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert isinstance(err["message"], str) and err["message"], err
    for field, want in (("type", type), ("code", code), ("param", param)):
        if want is not ANY:
            assert err[field] == want, (field, err)
    return err


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


ADMIN = bearer(ADMIN_TOKEN)


def metric_samples(url: str) -> dict[tuple, float]:
    """(sample name, sorted labels) -> value, from GET /metrics."""
    r = httpx.get(url + "/metrics")
    assert r.status_code == 200
    out = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def metric(url: str, name: str, **labels) -> float:
    return metric_samples(url).get((name, tuple(sorted(labels.items()))), 0.0)


def eraser_files(path) -> dict:
    return {f: (f, (path / f).read_bytes()) for f in FILES}
