"""What a broken client or an intruder sends: text that is not Unicode, names built to stick,
bodies that never finish, nested JSON, repeated erasers, oversized erasers, weak admin tokens.

Each answer must be a clear 4xx in the OpenAI error shape, and the admin trail must say who
changed what.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from urllib.parse import quote, urlparse

import httpx
import pytest
from pydantic import ValidationError
from server_helpers import (
    ADMIN,
    ADMIN_TOKEN,
    assert_error,
    chat_body,
    eraser_files,
    make_eraser,
    metric,
    running_server,
    served_carrier,
)

from eraser_store.format import CONFIG_FILE, SIDECAR_FILE
from server.settings import ServerSettings

CHAT = "/v1/chat/completions"
TEXT = "/v1/completions"
ERASERS = "/admin/erasers"


@pytest.fixture(scope="module")
def served(fixed_response_carrier, tmp_path_factory):
    return served_carrier(fixed_response_carrier.carrier, tmp_path_factory.mktemp("abuse"))


@pytest.fixture(scope="module")
def running(served):
    with running_server(served, body_timeout_s=0.5) as (url, app):
        yield url, app


@pytest.fixture(scope="module")
def url(running) -> str:
    return running[0]


def post_raw(url: str, path: str, text: str) -> httpx.Response:
    """POST JSON text as written: `\\udc80` escapes reach the server as they are."""
    headers = {"content-type": "application/json"}
    return httpx.post(url + path, content=text.encode(), headers=headers)


@pytest.mark.parametrize(
    "path, fields, param",
    [
        (TEXT, '"prompt": "\\udc80"', "prompt"),
        (TEXT, '"prompt": ["\\udc80"], "stream": true', "prompt.0"),
        (CHAT, '"messages": [{"role": "user", "content": "hi \\ud800"}]', "messages.0.content"),
        (
            CHAT,
            '"messages": [{"role": "user", "content": [{"type": "text", "text": "\\udfff"}]}]',
            "messages.0.content.0.text",
        ),
        (TEXT, '"prompt": "x", "stop": ["\\ud800"]', "stop.0"),
        (TEXT, '"prompt": "x", "erasers": ["a\\udc80"]', "erasers.0"),
    ],
)
def test_text_that_is_not_unicode_is_a_400_naming_the_field(served, url, path, fields, param):
    r = post_raw(url, path, f'{{"model": "{served.model_name}", {fields}}}')
    err = assert_error(r, 400, type="invalid_request_error", param=param)
    assert "Unicode" in err["message"]
    assert metric(url, "sft_eraser_errors_total", type="server_error") == 0


@pytest.mark.parametrize("path", [CHAT, TEXT])
def test_a_deeply_nested_request_body_is_a_400(url, path):
    r = post_raw(url, path, "[" * 100_000 + "]" * 100_000)
    assert_error(r, 400, type="invalid_request_error")
    r = post_raw(url, path, '{"model": ' + "[" * 100_000)  # cut short as well
    assert_error(r, 400, type="invalid_request_error")


@pytest.mark.parametrize("erasers", [["a", "a"], ["a", "a@1"], ["b", "a@1", "a"]])
def test_an_eraser_named_twice_is_refused(served, url, erasers):
    r = httpx.post(url + CHAT, json=chat_body(served.model_name, "hi", erasers))
    err = assert_error(r, 400, code="duplicate_eraser", param=f"erasers[{len(erasers) - 1}]")
    assert "'a'" in err["message"]


@pytest.mark.parametrize("name", ["abc\n", "abc\r\n", "\nabc", "a\nb"])
def test_a_name_with_a_newline_is_refused_everywhere(served, url, name):
    files = eraser_files(served.erasers["a"])
    r = httpx.post(url + ERASERS, files=files, data={"name": name}, headers=ADMIN)
    assert_error(r, 400, param="name")
    r = httpx.delete(url + ERASERS + "/" + quote(name, safe=""), headers=ADMIN)
    assert_error(r, 400, param="ref")
    r = httpx.post(url + CHAT, json=chat_body(served.model_name, "hi", [name]))
    assert_error(r, 400, param="erasers[0]")
    assert all("\n" not in e["name"] for e in httpx.get(url + "/v1/erasers").json()["data"])


@pytest.mark.parametrize("file_name", [SIDECAR_FILE, CONFIG_FILE])
def test_deeply_nested_json_in_an_upload_is_a_422(served, url, file_name):
    files = eraser_files(served.erasers["a"])
    files[file_name] = (file_name, b"[" * 200_000 + b"]" * 200_000)
    r = httpx.post(url + ERASERS, files=files, data={"name": "nested"}, headers=ADMIN)
    err = assert_error(r, 422, code="invalid_eraser")
    assert "nested too deeply" in err["message"]


def test_an_eraser_longer_than_the_context_is_refused_at_registration(served, url, tmp_path):
    context = 512  # the tiny models' max_position_embeddings
    too_long = make_eraser(served.carrier, tmp_path / "long", "long", seed=3, tokens=context - 1)
    files = eraser_files(too_long)
    r = httpx.post(url + ERASERS, files=files, data={"force": "true"}, headers=ADMIN)
    err = assert_error(r, 409, code="carrier_mismatch")
    assert "context of 512" in err["message"]
    fits = make_eraser(served.carrier, tmp_path / "fits", "fits", seed=3, tokens=context - 2)
    r = httpx.post(url + ERASERS, files=eraser_files(fits), headers=ADMIN)
    assert r.status_code == 201, r.text


def test_uploads_are_staged_inside_the_store(running, served, monkeypatch):
    """Where `gc` and a server's start clean up after an upload killed mid-way."""
    url, app = running
    store = app.state.server.store
    staged = []
    add = store.add

    def spy(src, **kw):
        staged.append(src)
        return add(src, **kw)

    monkeypatch.setattr(store, "add", spy)
    r = httpx.post(
        url + ERASERS, files=eraser_files(served.erasers["b"]), data={"name": "s"}, headers=ADMIN
    )
    assert r.status_code == 201, r.text
    assert staged[0].parent == store.tmp
    assert not staged[0].exists()  # removed once added
    assert list(store.tmp.iterdir()) == []


def test_a_server_start_removes_what_a_killed_upload_left(served):
    from eraser_store import EraserStore

    store = EraserStore(served.store)
    dead = store.tmp / "upload-999999999-0123abcd"  # no such process
    dead.mkdir()
    (dead / SIDECAR_FILE).write_text("{")
    with running_server(served):
        assert not dead.exists()


def test_a_body_that_never_finishes_is_cut_off_with_408(served, url):
    host, port = urlparse(url).hostname, urlparse(url).port
    with socket.create_connection((host, port), timeout=10) as s:
        start = time.monotonic()
        s.sendall(
            f"POST {CHAT} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            "Content-Length: 100\r\n\r\n{}".encode()
        )
        reply = b""
        while b"\r\n\r\n" not in reply:
            chunk = s.recv(4096)
            if not chunk:
                break
            reply += chunk
        elapsed = time.monotonic() - start
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert elapsed < 5  # the body timeout of this server is 0.5 s


def test_a_slow_body_within_the_timeout_is_served(served, url):
    """The timeout bounds the whole body, not each chunk: a body that does arrive is fine."""
    body = httpx.Request("POST", url + CHAT, json=chat_body(served.model_name, "hi", max_tokens=2))
    payload = body.read()

    def slowly():
        yield payload[:10]
        time.sleep(0.1)
        yield payload[10:]

    r = httpx.post(
        url + CHAT,
        content=slowly(),
        headers={"content-type": "application/json", "content-length": str(len(payload))},
    )
    assert r.status_code == 200, r.text


def test_admin_changes_are_logged_with_what_which_version_and_who(served, url, caplog):
    caplog.set_level(logging.INFO, logger="server.audit")
    r = httpx.post(
        url + ERASERS, files=eraser_files(served.erasers["a"]), data={"name": "aud"}, headers=ADMIN
    )
    record = r.json()
    r = httpx.delete(url + ERASERS + "/aud", headers=ADMIN)
    assert r.status_code == 200
    httpx.delete(url + ERASERS + "/aud", headers={"Authorization": "Bearer wrong-token"})
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "server.audit"]
    added, removed, refused = lines
    assert f"added: aud@{record['version']}" in added and record["sha256"] in added
    assert "127.0.0.1" in added
    assert f"removed: aud versions=[{record['version']}]" in removed and "127.0.0.1" in removed
    assert "invalid token" in refused and "wrong-token" not in refused


def test_the_list_of_erasers_reads_the_store_off_the_event_loop(running, monkeypatch):
    url, app = running
    store = app.state.server.store
    threads = []
    real = store.list

    def spy(*a, **kw):
        threads.append(threading.current_thread())
        return real(*a, **kw)

    monkeypatch.setattr(store, "list", spy)
    assert httpx.get(url + "/v1/erasers").status_code == 200
    # A worker of the thread pool, not the thread that runs the event loop.
    assert [t.name for t in threads] == ["AnyIO worker thread"]


# ---- settings


@pytest.mark.parametrize("empty", ["", "   "])
def test_an_empty_admin_token_means_the_admin_routes_are_off(tmp_path, empty, monkeypatch):
    monkeypatch.setenv("SFT_ERASER_ADMIN_TOKEN", empty)
    settings = ServerSettings(carrier=tmp_path, store=tmp_path)
    assert settings.admin_token is None
    assert ServerSettings(carrier=tmp_path, store=tmp_path, admin_token=empty).admin_token is None


def test_a_short_admin_token_is_refused(tmp_path):
    with pytest.raises(ValidationError, match="at least 8 characters"):
        ServerSettings(carrier=tmp_path, store=tmp_path, admin_token="short")
    token = ServerSettings(carrier=tmp_path, store=tmp_path, admin_token=ADMIN_TOKEN).admin_token
    assert token.get_secret_value() == ADMIN_TOKEN
