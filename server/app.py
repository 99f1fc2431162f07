"""The FastAPI app: state, lifespan (load the model, drain on shutdown), errors, middleware."""

from __future__ import annotations

import asyncio
import logging
import re
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from eraser_store import EraserStore, EraserStoreUnavailable, carrier_ref, open_store
from eraser_store.pg_store import PgEraserStore
from server import admin, engines, errors, routes
from server.auth import KeyRing
from server.erasers import ErasersOnDevice
from server.metrics import Metrics
from server.middleware import BodyLimit, RequestMetrics
from server.replica import ReplicaView
from server.settings import ServerSettings
from server.state import ServerState

log = logging.getLogger("server")


def create_app(settings: ServerSettings) -> FastAPI:
    """Check the carrier, store, key file and engine now (clear errors at startup); load the
    model in the background so /health answers at once and /ready turns 200 when it is loaded."""
    engine = engines.resolve(settings.engine)
    store = open_store(settings.store, carrier=carrier_ref(settings.carrier))
    if isinstance(store, EraserStore):  # PostgreSQL keeps no files of an upload
        for leftover in store.clean_tmp():  # what a killed upload or add left behind
            log.info("removed %s: left by an interrupted upload or add", leftover)
    keyring = KeyRing.load(settings.api_keys_file) if settings.api_keys_file else None
    view = ReplicaView(store) if isinstance(store, PgEraserStore) else None
    state = ServerState(settings, store, keyring, Metrics(), view=view)
    if view is not None:
        state.metrics.watch_store(view)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loading = asyncio.create_task(asyncio.to_thread(_load, state, engine))
        if view is not None:
            view.start()
        try:
            yield
        finally:
            state.draining = True
            if view is not None:
                await asyncio.to_thread(view.stop)
            await loading
            if state.engine is not None:
                # Requests in flight have had their drain (DrainingServer): fail what is left.
                await run_in_threadpool(state.engine.shutdown, 0)

    app = FastAPI(title="sft-eraser", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.openapi = lambda: _openapi(app)
    app.state.server = state
    app.include_router(routes.router)
    app.include_router(admin.router)
    _add_error_handlers(app, state)
    app.add_middleware(
        BodyLimit,
        limit_for_path=lambda path: (
            settings.max_upload_bytes if path.startswith("/admin/") else settings.max_body_bytes
        ),
        timeout_s=settings.body_timeout_s,
        metrics=state.metrics,
    )
    # Added last, so outermost: it also counts what BodyLimit refuses before routing.
    app.add_middleware(RequestMetrics, metrics=state.metrics)
    return app


# pydantic names the member of a union a value failed ("str", "list[TextPart]",
# "function-after[...]") in the error's location; no request field has such a name.
UNION_MEMBER = re.compile(r"str|int|float|bool|list|dict|none|.*\[.*")


def _union_member(part) -> bool:
    return isinstance(part, str) and UNION_MEMBER.fullmatch(part) is not None


def _openapi(app: FastAPI) -> dict:
    """FastAPI's schema without its default 422 "Validation Error" responses: this server
    answers invalid requests with 400 and the error body (errors.documented lists each route's
    statuses), so generated clients and fuzzers expect what it really sends."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        for operations in schema["paths"].values():
            for operation in operations.values():
                responses = operation["responses"]
                if responses.get("422", {}).get("description") == "Validation Error":
                    del responses["422"]
        for unused in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(unused, None)
        app.openapi_schema = schema
    return app.openapi_schema


def _load(state: ServerState, engine: str) -> None:
    s = state.settings
    try:
        loaded, built = engines.build(s, engine)
    except Exception as e:
        log.exception("loading %s failed", s.carrier)
        # Clients see the kind of failure; the message (paths, ...) goes to the log only.
        state.load_error = f"{type(e).__name__} (see the server log)"
        return
    state.metrics.watch_engine(built)
    state.erasers = ErasersOnDevice(
        state.index, loaded.device, loaded.dtype, max_bytes=int(s.eraser_cache_mb * (1 << 20))
    )
    state.loaded = loaded
    state.engine = built
    log.info(
        "serving %s with the %s engine (%s, %s)",
        s.served_model_name,
        engine,
        loaded.device,
        loaded.dtype,
    )


def _add_error_handlers(app: FastAPI, state: ServerState) -> None:
    def respond(error: errors.APIError):
        state.metrics.errors.labels(error.type).inc()
        return error.response()

    @app.exception_handler(errors.APIError)
    async def api_error(request: Request, exc: errors.APIError):
        return respond(exc)

    @app.exception_handler(ClientDisconnect)
    async def client_gone(request: Request, exc: ClientDisconnect):
        # Reading the body failed (an upload cut mid-way): nothing was done, and no one reads
        # this answer; not an unhandled error.
        log.info("%s: the client went away before sending its whole body", request.url.path)
        return respond(errors.bad_request("the body ended early", code="client_disconnected"))

    @app.exception_handler(EraserStoreUnavailable)
    async def store_lost(request: Request, exc: EraserStoreUnavailable):
        log.warning("%s: %s", request.url.path, exc)
        # The URL (host, port, database) stays in the log.
        return respond(
            errors.unavailable("the eraser store is unreachable; retry later", code="store_lost")
        )

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        problems = exc.errors()
        # A failed check of a value says more than "not a list" from the other side of a union.
        first = next((p for p in problems if p.get("type") == "value_error"), problems[0])
        if first.get("type") == "json_invalid":
            return respond(errors.bad_request("the body is not valid JSON", code="invalid_json"))
        loc = [str(p) for p in first.get("loc", ()) if p != "body" and not _union_member(p)]
        param = ".".join(loc) or None
        message = f"{param}: {first.get('msg')}" if param else str(first.get("msg"))
        if len(problems) > 1:
            message += f" (and {len(problems) - 1} more problem(s))"
        return respond(errors.bad_request(message, param=param))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        # FastAPI turns an error raised while reading the body into a 400; keep the real one.
        if isinstance(exc.__cause__, errors.APIError):
            return respond(exc.__cause__)
        kind = {404: "not_found_error", 405: "invalid_request_error"}.get(
            exc.status_code, "invalid_request_error"
        )
        # Keep the exception's headers: a 405 must say which methods are allowed (Allow).
        return respond(
            errors.APIError(exc.status_code, str(exc.detail), type=kind, headers=exc.headers)
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        log.exception("unhandled error on %s", request.url.path)
        return respond(
            errors.APIError(500, "internal server error; see the server log", type="server_error")
        )
