"""Two `sft-eraser serve` processes on two loopback ports sharing one PostgreSQL store: what one
registers or removes the other sees within a second, an upload cut mid-way changes nothing, and
PostgreSQL stopped and started under traffic gives no 500 and never a wrong eraser."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from server_helpers import (
    ADMIN_TOKEN,
    APP_KEY,
    OTHER_PROMPT,
    RED_KEY,
    chat_body,
    free_port,
    make_eraser,
    sse_events,
    wait_ready,
    write_keys_file,
)

from eraser_store import open_store
from eraser_store.format import CARRIER_FORMAT, CARRIER_MANIFEST, FILES
from eraser_store.upload import upload_eraser

ROOT = Path(__file__).resolve().parents[1]
RED = {"Authorization": f"Bearer {RED_KEY}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
CHAT = "/v1/chat/completions"
WITHIN_S = 1.0


@pytest.fixture(scope="module")
def carrier(tiny_llama, tmp_path_factory) -> Path:
    """The tiny random model with a carrier manifest: all a server needs to serve erasers."""
    out = tmp_path_factory.mktemp("replicas") / "carrier"
    shutil.copytree(tiny_llama, out)
    manifest = {"format": CARRIER_FORMAT, "fingerprint": "sha256:" + "c" * 64}
    (out / CARRIER_MANIFEST).write_text(json.dumps(manifest))
    return out


@pytest.fixture(scope="module")
def cluster(carrier, postgres, tmp_path_factory) -> Iterator[tuple[str, str, str, Path]]:
    """(url A, url B, store URL, a directory for erasers): two replicas, one database, one key
    file (shared config), erasers "a" and "b" registered."""
    root = tmp_path_factory.mktemp("cluster")
    store_url = postgres.new_database()
    store = open_store(store_url)
    for name, seed in (("a", 1), ("b", 2)):
        store.add(make_eraser(carrier, root / name, name, seed))
    keys = write_keys_file(root)
    with ExitStack() as stack:
        urls = [
            stack.enter_context(replica(carrier, store_url, keys, root / f"log{i}"))
            for i in range(2)
        ]
        for url in urls:
            wait_ready(url)
        yield urls[0], urls[1], store_url, root


@contextmanager
def replica(carrier: Path, store_url: str, keys: Path, log: Path) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "SFT_ERASER_ADMIN_TOKEN": ADMIN_TOKEN,
        "SFT_ERASER_DEVICE": "cpu",
    }
    args = ["--carrier", str(carrier), "--store", store_url, "--api-keys-file", str(keys)]
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sft_eraser", "serve", *args, "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait()
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]


def chat(url: str, erasers: list[str], headers=RED) -> httpx.Response:
    body = chat_body("carrier", OTHER_PROMPT, erasers, max_tokens=4)
    return httpx.post(url + CHAT, json=body, headers=headers, timeout=30)


def until(condition, timeout_s: float) -> float:
    """Seconds until `condition()` held; raises if it did not within `timeout_s`."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout_s:
            raise TimeoutError(f"condition not met within {timeout_s} s")
        time.sleep(0.02)
    return time.monotonic() - start


def listed(url: str) -> list[str]:
    r = httpx.get(url + "/v1/erasers", params={"all_versions": "true"}, headers=RED)
    return [f"{e['name']}@{e['version']}" for e in r.json()["data"]]


def test_keys_and_admin_token_are_the_same_on_every_replica(cluster):
    a, b, _, _ = cluster
    for url in (a, b):
        assert chat(url, ["b"], {"Authorization": f"Bearer {APP_KEY}"}).status_code == 200
        assert chat(url, ["a"], {"Authorization": f"Bearer {APP_KEY}"}).status_code == 403
        assert httpx.delete(url + "/admin/erasers/zzz", headers=RED).status_code == 401


def test_register_on_one_use_on_the_other_delete_there_gone_here(cluster, carrier):
    """Propagation is timed on the listing (no generation in it: a loaded CPU must not make
    the second look late); the requests then check what is served."""
    a, b, _, root = cluster
    eraser = make_eraser(carrier, root / "new", "new", seed=3)
    assert upload_eraser(a, eraser, ADMIN_TOKEN)["version"] == 1
    assert "new@1" in listed(a)  # the writing replica: at once
    assert until(lambda: "new@1" in listed(b), WITHIN_S) < WITHIN_S
    assert chat(b, ["new"]).json()["erasers"] == ["new@1"]

    # A request running on A when B deletes the eraser finishes with what it started with.
    body = chat_body("carrier", OTHER_PROMPT, ["new"], max_tokens=440, ignore_eos=True)
    body["stream"] = True
    events = []

    def stream():
        with httpx.stream("POST", a + CHAT, json=body, headers=RED, timeout=60) as r:
            events.extend(sse_events(r))

    running = threading.Thread(target=stream)
    running.start()
    until(lambda: "sft_eraser_running_requests 1.0" in httpx.get(a + "/metrics").text, 30)
    r = httpx.delete(b + "/admin/erasers/new", headers=ADMIN)
    assert r.status_code == 200 and r.json()["removed_versions"] == [1]
    assert running.is_alive()  # removed while A generates with it
    assert chat(b, ["new"]).status_code == 404
    assert until(lambda: "new@1" not in listed(a), WITHIN_S) < WITHIN_S
    assert chat(a, ["new"]).status_code == 404
    running.join(60)
    finished = [e for e in events if e != "[DONE]" and e["choices"][0]["finish_reason"]]
    assert [e["choices"][0]["finish_reason"] for e in finished] == ["length"]


def test_the_cli_reaches_every_replica(cluster, carrier):
    a, b, store_url, root = cluster
    eraser = make_eraser(carrier, root / "cli", "cli", seed=4)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    add = [sys.executable, "-m", "sft_eraser", "erasers", "add", str(eraser), "--store", store_url]
    done = subprocess.run(add, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    for url in (a, b):
        until(lambda url=url: "cli@1" in listed(url), WITHIN_S)
    remove = [sys.executable, "-m", "sft_eraser", "erasers", "remove", "cli", "--store", store_url]
    assert subprocess.run(remove, capture_output=True, env=env, timeout=120).returncode == 0
    for url in (a, b):
        until(lambda url=url: chat(url, ["cli"]).status_code == 404, WITHIN_S)


def test_an_upload_cut_mid_way_changes_nothing(cluster, carrier):
    a, b, store_url, root = cluster
    before = listed(a)
    assert listed(b) == before
    eraser = make_eraser(carrier, root / "cut", "cut", seed=5)
    request = httpx.Request(
        "POST",
        a + "/admin/erasers",
        files={f: (f, (eraser / f).read_bytes()) for f in FILES},
        headers=ADMIN,
    )
    body = request.read()
    head = ["POST /admin/erasers HTTP/1.1", f"Host: {urlsplit(a).netloc}"]
    head += [f"{k}: {v}" for k, v in request.headers.items() if k.lower() != "host"]
    with socket.create_connection((urlsplit(a).hostname, urlsplit(a).port)) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body[: len(body) // 2])
        time.sleep(0.5)  # the server is reading the body when the client goes away
    time.sleep(2 * WITHIN_S)
    assert listed(a) == before and listed(b) == before
    assert chat(b, ["cut"]).status_code == 404
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    verify = [sys.executable, "-m", "sft_eraser", "erasers", "verify", "--store", store_url]
    done = subprocess.run(verify, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0 and f"ok: {len(before)} eraser versions" in done.stdout


def test_concurrent_uploads_to_both_replicas_get_unique_versions(cluster, carrier):
    a, b, _, root = cluster
    eraser = make_eraser(carrier, root / "many", "many", seed=6)
    versions = []

    def upload(url):
        versions.append(upload_eraser(url, eraser, ADMIN_TOKEN)["version"])

    threads = [threading.Thread(target=upload, args=(url,)) for url in (a, b, a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(versions) == [1, 2, 3, 4]
    for url in (a, b):
        until(
            lambda url=url: (
                [r for r in listed(url) if r.startswith("many@")]
                == [f"many@{v}" for v in (1, 2, 3, 4)]
            ),
            WITHIN_S,
        )


def test_postgres_stopped_and_started_under_traffic(cluster, carrier, postgres):
    """Erasers used before the outage keep serving from memory, the rest answer 503;
    /ready and /metrics say the store is lost; when it is back everything is served again."""
    a, b, _, root = cluster
    # "late" is registered but never used on B before the outage: nothing verified there.
    upload_eraser(a, make_eraser(carrier, root / "late", "late", seed=7), ADMIN_TOKEN)
    until(lambda: "late@1" in listed(b), WITHIN_S)
    reference = {url: {e: chat(url, [e]).json() for e in ("a", "b")} for url in (a, b)}
    statuses, wrong = [], []
    stop = threading.Event()

    def traffic():
        while not stop.is_set():
            for url in (a, b):
                for e in ("a", "b"):
                    r = chat(url, [e])
                    statuses.append(r.status_code)
                    if r.status_code == 200 and (
                        r.json()["erasers"] != reference[url][e]["erasers"]
                        or r.json()["choices"] != reference[url][e]["choices"]
                    ):
                        wrong.append((url, e, r.json()))

    thread = threading.Thread(target=traffic)
    thread.start()
    try:
        time.sleep(0.5)
        postgres.stop()
        for url in (a, b):
            until(lambda url=url: ready_store(url)["status"] == "unreachable", 5)
            assert "sft_eraser_store_up 0.0" in httpx.get(url + "/metrics").text
        r = chat(b, ["late"])
        assert r.status_code == 503 and r.json()["error"]["code"] == "store_lost"
        late = root / "late"
        files = {f: (f, (late / f).read_bytes()) for f in FILES}
        r = httpx.post(a + "/admin/erasers", files=files, headers=ADMIN)
        assert r.status_code == 503 and r.json()["error"]["code"] == "store_lost"
        time.sleep(1)
    finally:
        postgres.start()
    for url in (a, b):
        until(lambda url=url: ready_store(url)["status"] == "ok", 5)
        assert "sft_eraser_store_up 1.0" in httpx.get(url + "/metrics").text
    assert chat(b, ["late"]).json()["erasers"] == ["late@1"]
    stop.set()
    thread.join(60)
    assert statuses and set(statuses) == {200} and wrong == []


def ready_store(url: str) -> dict:
    r = httpx.get(url + "/ready")
    assert r.status_code == 200
    return r.json()["store"]


def test_a_replica_without_its_database_does_not_start(carrier):
    """Nothing verified to serve: one line and exit code 2, like any other wrong setting."""
    store_url = f"postgresql://postgres@127.0.0.1:{free_port()}/erasers"
    serve = [sys.executable, "-m", "sft_eraser", "serve", "--carrier", str(carrier)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [*serve, "--store", store_url], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "sft-eraser serve: error: the eraser store" in done.stderr
    assert "unreachable" in done.stderr


def test_a_replica_never_applies_bytes_that_fail_their_sha256(pg_database, tmp_path):
    """Bytes changed in the database after registration: refused as damaged (500, logged), not
    prepended; the others still serve."""
    import psycopg
    import torch

    from eraser_store import write_eraser
    from eraser_store.pg_store import PgEraserStore
    from server.erasers import ErasersOnDevice
    from server.errors import APIError
    from server.replica import ReplicaView

    store = PgEraserStore(pg_database)
    for name in ("good", "bad"):
        src = write_eraser(
            tmp_path / name,
            torch.ones(2, 8),
            name=name,
            behavior="b",
            carrier_fingerprint="sha256:" + "c" * 64,
            num_layers=1,
            num_attention_heads=1,
            channel_count=0,
            training={},
        )
        store.add(src)
    with psycopg.connect(pg_database) as db:
        db.execute(
            "UPDATE erasers SET weights = overlay(weights placing '\\xff'::bytea "
            "from length(weights) - 2) WHERE name = 'bad'"
        )
    on_device = ErasersOnDevice(
        ReplicaView(store), torch.device("cpu"), torch.float32, max_bytes=1 << 20
    )
    with pytest.raises(APIError) as refused:
        on_device.resolve(["bad"], None)
    assert (refused.value.status, refused.value.code) == (500, "eraser_corrupted")
    assert not on_device._cache
    (good,) = on_device.resolve(["good"], None)
    assert torch.equal(good.embeddings, torch.ones(2, 8))
    assert [p.split(":")[0] for p in store.verify()] == ["eraser bad@1 is corrupted"]
