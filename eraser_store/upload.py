"""Upload an eraser to a running server's admin route: the client side of `POST /admin/erasers`.

The wire contract (the server implements the other side):
    POST {url}/admin/erasers
    Authorization: Bearer <admin token>
    multipart/form-data: one file part per eraser file, the part named after the file
        (adapter_config.json, adapter_model.safetensors, eraser.json);
        optional fields `name` (register under another name) and `force` ("true": accept a
        carrier-fingerprint mismatch)
    201 -> JSON record of the registered version ({"name", "version", ...})
    4xx/5xx -> {"error": {"message", "type", "param", "code"}}
"""

from __future__ import annotations

from pathlib import Path

import httpx

from eraser_store.format import FILES, read_eraser

ROUTE = "/admin/erasers"
TOKEN_ENV = "SFT_ERASER_ADMIN_TOKEN"


class UploadError(RuntimeError):
    """The server refused the eraser or could not be reached; the message says which."""


def upload_eraser(
    url: str,
    eraser_dir: Path,
    token: str,
    *,
    name: str | None = None,
    force: bool = False,
    timeout_s: float = 60.0,
    transport: httpx.BaseTransport | None = None,
) -> dict:
    """Register the eraser at `eraser_dir` with the server at `url`; return the server's record."""
    eraser_dir = Path(eraser_dir)
    read_eraser(eraser_dir)  # refuse locally what the server would refuse anyway
    if not token:
        raise UploadError(f"no admin token: set {TOKEN_ENV} to register with {url}")
    files = {f: (f, (eraser_dir / f).read_bytes()) for f in FILES}
    data = {"force": "true" if force else "false"}
    if name:
        data["name"] = name
    endpoint = url.rstrip("/") + ROUTE
    try:
        with httpx.Client(timeout=timeout_s, transport=transport) as client:
            response = client.post(
                endpoint, files=files, data=data, headers={"Authorization": f"Bearer {token}"}
            )
    except httpx.HTTPError as e:
        raise UploadError(f"could not reach {endpoint}: {e}") from None
    if response.status_code != 201:
        raise UploadError(f"{endpoint} answered {response.status_code}: {_error_message(response)}")
    return response.json()


def _error_message(response: httpx.Response) -> str:
    try:
        return response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return response.text[:200] or "(empty body)"
