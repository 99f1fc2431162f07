"""The client side of `POST /admin/erasers`, against an in-process stand-in for the server."""

from __future__ import annotations

import httpx
import pytest
import torch

from eraser_store import write_eraser
from eraser_store.format import FILES
from eraser_store.upload import UploadError, upload_eraser


@pytest.fixture
def eraser_dir(tmp_path):
    return write_eraser(
        tmp_path / "e",
        torch.randn(3, 8),
        name="erase-x",
        behavior="x",
        carrier_fingerprint="sha256:ab",
        num_layers=2,
        num_attention_heads=2,
        channel_count=5,
        training={},
    )


def test_upload_sends_the_three_files_with_the_token(eraser_dir):
    seen = {}

    def server(request: httpx.Request) -> httpx.Response:
        seen["url"] = str(request.url)
        seen["auth"] = request.headers["authorization"]
        seen["body"] = request.read()
        return httpx.Response(201, json={"name": "renamed", "version": 2})

    record = upload_eraser(
        "http://srv:8000/",
        eraser_dir,
        "s3cret",
        name="renamed",
        transport=httpx.MockTransport(server),
    )
    assert record == {"name": "renamed", "version": 2}
    assert seen["url"] == "http://srv:8000/admin/erasers" and seen["auth"] == "Bearer s3cret"
    for f in FILES:
        assert f'name="{f}"'.encode() in seen["body"]
        assert (eraser_dir / f).read_bytes() in seen["body"]
    assert b'name="name"' in seen["body"] and b"renamed" in seen["body"]


def test_upload_reports_the_servers_error_message(eraser_dir):
    def server(request):
        return httpx.Response(
            409,
            json={
                "error": {
                    "message": "fingerprint mismatch",
                    "type": "x",
                    "param": None,
                    "code": "carrier_mismatch",
                }
            },
        )

    with pytest.raises(UploadError, match="409: fingerprint mismatch"):
        upload_eraser("http://srv", eraser_dir, "t", transport=httpx.MockTransport(server))


def test_upload_needs_a_token_and_a_server(eraser_dir):
    with pytest.raises(UploadError, match="SFT_ERASER_ADMIN_TOKEN"):
        upload_eraser("http://srv", eraser_dir, "")

    def down(request):
        raise httpx.ConnectError("connection refused")

    with pytest.raises(UploadError, match="could not reach"):
        upload_eraser("http://srv", eraser_dir, "t", transport=httpx.MockTransport(down))


def test_train_eraser_register_without_token_fails_before_training(tmp_path, capsys, monkeypatch):
    from training.cli import main

    monkeypatch.delenv("SFT_ERASER_ADMIN_TOKEN", raising=False)
    code = main(
        [
            "train",
            "eraser",
            "--carrier",
            str(tmp_path / "nope"),
            "--behavior",
            "x",
            "--data",
            str(tmp_path / "d.jsonl"),
            "--out",
            str(tmp_path / "e"),
            "--register",
            "http://127.0.0.1:9",
        ]
    )
    assert code == 2
    assert "needs the admin token" in capsys.readouterr().err
