"""ASGI middleware: request body size limits and per-route request counts.

Plain ASGI (not BaseHTTPMiddleware) so streaming responses and disconnect detection pass through.
"""

from __future__ import annotations

from collections.abc import Callable

from server import errors
from server.metrics import Metrics


class BodyLimit:
    """413 when the Content-Length is over the limit, or as soon as the body grows past it."""

    def __init__(self, app, limit_for_path: Callable[[str], int], metrics: Metrics):
        self.app, self.limit_for_path, self.metrics = app, limit_for_path, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.limit_for_path(scope["path"])
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and not length.isdigit():
            return await self._refuse(send, errors.bad_request("bad Content-Length header"))
        if length is not None and int(length) > limit:
            return await self._refuse(send, errors.too_large(limit))
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise errors.too_large(limit)
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
