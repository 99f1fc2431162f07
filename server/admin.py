"""Admin routes: register and remove erasers while the server runs.

Off unless an admin token is configured. POST takes the eraser exactly as `train eraser` writes
it (the contract of eraser_store.upload); the store validates and versions it.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException

from eraser_store import (
    EraserFormatError,
    EraserNotFound,
    EraserRecord,
    EraserRefused,
    EraserStoreError,
    EraserStoreUnavailable,
    parse_ref,
)
from eraser_store.format import FILES
from server import errors
from server.auth import bearer_token, token_matches
from server.routes import server_state
from server.settings import ENV_PREFIX

router = APIRouter(prefix="/admin")
# Who switched which behavior off, and since when: one line per change, kept apart from the
# request log so an operator can route it to an audit trail.
audit = logging.getLogger("server.audit")
TRUE, FALSE = {"true", "1", "yes"}, {"false", "0", "no", ""}


def require_admin(request: Request) -> None:
    token = server_state(request).settings.admin_token
    if token is None:
        raise errors.not_found(
            f"the admin routes are off: start the server with {ENV_PREFIX}ADMIN_TOKEN set",
            code="admin_disabled",
        )
    if not token_matches(
        bearer_token(request.headers.get("authorization")), token.get_secret_value()
    ):
        audit.warning("admin request with a missing or invalid token by %s", _client(request))
        raise errors.unauthorized("missing or invalid admin token")


@router.post(
    "/erasers",
    status_code=201,
    dependencies=[Depends(require_admin)],
    responses=errors.documented(401, 404, 409, 422, 503),
)
async def add_eraser(request: Request) -> JSONResponse:
    state = server_state(request)
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise errors.bad_request(
            f"send the eraser as multipart/form-data with parts {', '.join(FILES)}"
        )
    try:
        form = await request.form(
            max_files=len(FILES), max_fields=8, max_part_size=state.settings.max_upload_bytes
        )
    except MultiPartException as e:
        raise errors.bad_request(f"bad multipart body: {e.message}") from None
    missing = [f for f in FILES if not isinstance(form.get(f), UploadFile)]
    if missing:
        raise errors.bad_request(f"missing file part(s): {', '.join(missing)}", param=missing[0])
    name = form.get("name") or None
    force = str(form.get("force", "")).lower()
    if force not in TRUE | FALSE:
        raise errors.bad_request(f"force must be true or false, not {force!r}", param="force")
    parts = {f: await form[f].read() for f in FILES}
    try:
        record = await run_in_threadpool(
            state.store.add_files, parts, name=name, force=force in TRUE
        )
    except EraserFormatError as e:
        raise _refused(request, errors.unprocessable(str(e))) from None
    except EraserRefused as e:
        raise _refused(request, errors.conflict(str(e), code="carrier_mismatch")) from None
    except EraserStoreUnavailable:
        raise  # the app's handler: 503
    except EraserStoreError as e:
        raise _refused(request, errors.bad_request(str(e), param="name")) from None
    if state.view is not None:  # seen here at once, not at the next poll
        await run_in_threadpool(state.view.refresh)
    audit.info(
        "eraser added: %s behavior=%s tokens=%d sha256=%s force=%s by %s",
        record.ref,
        record.behavior,
        record.tokens,
        record.sha256,
        force in TRUE,
        _client(request),
    )
    return JSONResponse(record_json(record), status_code=201)


def _refused(request: Request, error: errors.APIError) -> errors.APIError:
    audit.warning(
        "eraser add refused (%d): %s by %s", error.status, error.message, _client(request)
    )
    return error


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown address"


@router.delete(
    "/erasers/{ref}",
    dependencies=[Depends(require_admin)],
    responses=errors.documented(401, 404, 503),
)
async def remove_eraser(ref: str, request: Request) -> dict:
    """Remove NAME (every version) or NAME@VERSION. Requests in flight keep their copy."""
    state = server_state(request)
    try:
        name, version = parse_ref(ref)
    except EraserStoreError as e:
        raise errors.bad_request(str(e), param="ref") from None
    try:
        removed = await run_in_threadpool(state.store.remove, name, version)
    except EraserNotFound:
        raise errors.not_found(
            f"no eraser {ref!r} is registered", code="eraser_not_found"
        ) from None
    if state.view is not None:
        await run_in_threadpool(state.view.refresh)
    if state.erasers is not None:
        state.erasers.forget(name)
    audit.info("eraser removed: %s versions=%s by %s", name, removed, _client(request))
    return {"name": name, "removed_versions": removed}


def record_json(r: EraserRecord) -> dict:
    return {
        "name": r.name,
        "version": r.version,
        "behavior": r.behavior,
        "tokens": r.tokens,
        "hidden_size": r.hidden_size,
        "sha256": r.sha256,
        "carrier_fingerprint": r.carrier_fingerprint,
        "created": r.created,
    }
