"""Inference routes (OpenAI-compatible) and the probes: /health, /ready, /metrics."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool

from server import errors, serving
from server.auth import ApiKey, bearer_token
from server.protocol import ChatCompletionRequest, CompletionRequest
from server.replica import ReplicaView
from server.state import ServerState

router = APIRouter()
# The probes answer 503 with their own small body, not an error: orchestrators read the status.
PROBE_DOWN = {503: {"description": "Not ready: loading, draining, or failed (`status`, `error`)"}}
# A completion is JSON, or with "stream": true server-sent events ending in `data: [DONE]`.
COMPLETION = {
    200: {
        "description": "The completion, or its chunks as server-sent events",
        "content": {"application/json": {}, "text/event-stream": {}},
    }
} | errors.documented(401, 403, 404, 429, 500, 503, 504)


def server_state(request: Request) -> ServerState:
    return request.app.state.server


def api_key(request: Request) -> ApiKey | None:
    """The caller's key; None when the server needs no keys. 401 on a missing or wrong key."""
    keyring = server_state(request).keyring
    if keyring is None:
        return None
    key = keyring.authenticate(bearer_token(request.headers.get("authorization")))
    if key is None:
        raise errors.unauthorized("missing or invalid API key (send Authorization: Bearer <key>)")
    return key


CallerKey = Annotated[ApiKey | None, Depends(api_key)]


@router.post("/v1/chat/completions", responses=COMPLETION)
async def chat_completions(
    body: ChatCompletionRequest, request: Request, key: CallerKey
) -> Response:
    return await serving.complete(server_state(request), request, body, key)


@router.post("/v1/completions", responses=COMPLETION)
async def completions(body: CompletionRequest, request: Request, key: CallerKey) -> Response:
    return await serving.complete(server_state(request), request, body, key)


@router.get("/v1/models", responses=errors.documented(401))
async def models(request: Request, key: CallerKey) -> dict:
    state = server_state(request)
    model = {
        "id": state.settings.served_model_name,
        "object": "model",
        "created": state.started,
        "owned_by": "sft-eraser",
    }
    return {"object": "list", "data": [model]}


@router.get("/v1/erasers", responses=errors.documented(401))
async def list_erasers(request: Request, key: CallerKey, all_versions: bool = False) -> dict:
    """Registered erasers this key may use (latest version of each; ?all_versions=true: all)."""
    state = server_state(request)
    records = await run_in_threadpool(state.index.list, all_versions=all_versions)
    data = [
        {
            "object": "eraser",
            "name": r.name,
            "version": r.version,
            "behavior": r.behavior,
            "tokens": r.tokens,
            "sha256": r.sha256,
            "created": r.created,
        }
        for r in records
        if key is None or key.may_use(r.name)
    ]
    return {"object": "list", "data": data}


@router.get("/health", responses=PROBE_DOWN | errors.documented())
async def health(request: Request) -> JSONResponse:
    # Loading and draining are healthy; a process that can never serve is not, so an orchestrator
    # (the Dockerfile's HEALTHCHECK) restarts or flags it instead of routing 503s to it.
    failure = server_state(request).failure
    if failure:
        return JSONResponse({"status": "failed", "error": failure}, status_code=503)
    return JSONResponse({"status": "ok"})


@router.get("/ready", responses=PROBE_DOWN | errors.documented())
async def ready(request: Request) -> JSONResponse:
    state = server_state(request)
    store = {} if state.view is None else {"store": store_status(state.view)}
    if state.ready:
        # Still ready with the store lost: the erasers verified here keep serving, and a load
        # balancer that dropped every replica whose database went away would serve nothing.
        body = {"status": "ready", "model": state.settings.served_model_name, **store}
        return JSONResponse(body)
    failure = state.failure
    status = "draining" if state.draining else "failed" if failure else "loading"
    return JSONResponse({"status": status, "error": failure, **store}, status_code=503)


def store_status(view: ReplicaView) -> dict:
    if view.lost_since is None:
        return {"status": "ok", "generation": view.generation}
    return {"status": "unreachable", "since": int(view.lost_since), "generation": view.generation}


@router.get("/metrics", response_class=PlainTextResponse, responses=errors.documented())
async def metrics(request: Request) -> Response:
    return Response(server_state(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)
