"""ASGI middleware: request body size and time limits, and per-route request counts.

Plain ASGI (not BaseHTTPMiddleware) so streaming responses and disconnect detection pass through.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from server import errors
from server.metrics import Metrics


class BodyLimit:
    """413 when the Content-Length is over the limit, or as soon as the body grows past it;
    408 when the body has not fully arrived `timeout_s` after the request began (a client
    that declares 100 bytes and sends 2 must not hold a connection and a task for ever)."""

    def __init__(
        self, app, limit_for_path: Callable[[str], int], timeout_s: float, metrics: Metrics
    ):
        self.app, self.limit_for_path, self.metrics = app, limit_for_path, metrics
        self.timeout_s = timeout_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.limit_for_path(scope["path"])
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and not length.isdigit():
            return await self._refuse(send, errors.bad_request("bad Content-Length header"))
        if length is not None and int(length) > limit:
            return await self._refuse(send, errors.too_large(limit))
        received, body_done = 0, False
        deadline = time.monotonic() + self.timeout_s

        async def limited_receive():
            nonlocal received, body_done
            if body_done:  # later reads wait for a disconnect, for as long as a reply streams
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise errors.body_timeout(self.timeout_s) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise errors.too_large(limit)
                body_done = not message.get("more_body", False)
            return message

        await self.app(scope, limited_receive, send)

    async def _refuse(self, send, error: errors.APIError) -> None:
        """Answer before routing (so the app's error handlers never see it): count it here."""
        self.metrics.errors.labels(error.type).inc()
        await error.response()({"type": "http"}, None, send)


class RequestMetrics:
    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = 500

        async def record_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            self.metrics.requests.labels(path, str(status)).inc()
