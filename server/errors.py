"""OpenAI-shaped errors: `{"error": {"message", "type", "param", "code"}}` with a fitting status."""

from __future__ import annotations

from fastapi.responses import JSONResponse
from pydantic import BaseModel


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.type = status, message, type
        self.code, self.param, self.headers = code, param, headers

    def body(self) -> dict:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def bad_request(message: str, *, param: str | None = None, code: str = "invalid_value"):
    return APIError(400, message, type="invalid_request_error", code=code, param=param)


def unauthorized(message: str):
    return APIError(
        401,
        message,
        type="authentication_error",
        code="invalid_api_key",
        headers={"WWW-Authenticate": "Bearer"},
    )


def forbidden(message: str, *, param: str | None = None):
    return APIError(403, message, type="permission_error", code="forbidden", param=param)


def not_found(message: str, *, code: str = "not_found", param: str | None = None):
    return APIError(404, message, type="not_found_error", code=code, param=param)


def conflict(message: str, *, code: str = "conflict"):
    return APIError(409, message, type="conflict_error", code=code)


def too_large(limit: int):
    return APIError(
        413,
        f"the request body is larger than this route's limit of {limit} bytes",
        type="invalid_request_error",
        code="request_too_large",
    )


def body_timeout(seconds: float):
    return APIError(
        408,
        f"the request body did not arrive within {seconds:g} s",
        type="invalid_request_error",
        code="body_timeout",
        headers={"Connection": "close"},
    )


def unprocessable(message: str, *, param: str | None = None):
    return APIError(422, message, type="invalid_request_error", code="invalid_eraser", param=param)


def overloaded(retry_after_s: int):
    return APIError(
        429,
        "the server is at its queue bound; retry later",
        type="rate_limit_error",
        code="queue_full",
        headers={"Retry-After": str(retry_after_s)},
    )


def unavailable(message: str, *, code: str = "unavailable", retry_after_s: int | None = 5):
    """503; `retry_after_s=None` where no wait helps (the process can never serve)."""
    headers = None if retry_after_s is None else {"Retry-After": str(retry_after_s)}
    return APIError(503, message, type="server_error", code=code, headers=headers)


def timed_out(seconds: float):
    return APIError(
        504, f"the request ran past the {seconds:g} s limit", type="server_error", code="timeout"
    )


# ---- the OpenAPI description of errors: every status a route answers, with this body


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorBody(BaseModel):
    error: ErrorDetail


MEANING = {
    400: "Bad request: a field, the JSON, an eraser reference, or a length over the limits",
    401: "Missing or invalid API key (admin routes: admin token)",
    403: "This API key may not use an eraser it named",
    404: "Unknown model or eraser, or the admin routes are off",
    408: "The request body did not arrive in time",
    409: "The eraser was trained against another carrier (force to register it anyway)",
    413: "The request body is over this route's limit",
    422: "The uploaded eraser's files are invalid",
    429: "The server is at its queue bound; retry after Retry-After seconds",
    500: "Generation failed, or a registered eraser is damaged on the server",
    503: "The model is loading, failed to load, the server is shutting down, or the eraser "
    "store is unreachable",
    504: "The request ran past the server's time limit",
}
# What the body-limit middleware may answer on any route, before the route runs.
ANY_ROUTE = (400, 408, 413)


def documented(*statuses: int) -> dict[int | str, dict]:
    """FastAPI `responses=` for the error statuses a route answers (ANY_ROUTE added)."""
    return {
        s: {"model": ErrorBody, "description": MEANING[s]}
        for s in sorted(set(statuses) | set(ANY_ROUTE))
    }
