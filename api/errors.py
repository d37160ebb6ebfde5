"""JSON errors everywhere: `{"error": {"message", "type", "code"}}` (the OpenAI shape, which
OpenAI clients read), translated at the HTTP edge from `RagtuneError.http_status`."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ragtune.errors import BusyError, RagtuneError

log = logging.getLogger(__name__)

_TYPES = {400: "invalid_request_error", 401: "authentication_error",
          403: "permission_error", 404: "not_found_error",
          409: "conflict_error", 413: "request_too_large", 422: "invalid_request_error",
          429: "rate_limit_error", 502: "upstream_error", 503: "overloaded_error",
          504: "timeout_error"}


def status_of(err: BaseException) -> int:
    if isinstance(err, RagtuneError):
        return err.http_status
    if isinstance(err, StarletteHTTPException):
        return err.status_code
    return 500


def error_payload(err: BaseException, status: int | None = None,
                  message: str | None = None, **extra: Any) -> dict[str, Any]:
    """The error body for an exception (internal errors keep their details in the log)."""
    status = status or status_of(err)
    if message is None:
        if status >= 500 and not isinstance(err, RagtuneError):
            message = "internal error; see the server log"
        elif isinstance(err, StarletteHTTPException):
            message = str(err.detail)
        else:
            message = str(err)
    body = {"message": message, "type": _TYPES.get(status, "api_error"),
            "code": type(err).__name__ if isinstance(err, RagtuneError) else str(status), **extra}
    return {"error": body}


def _headers(err: BaseException) -> dict[str, str]:
    headers: dict[str, str] = dict(getattr(err, "headers", None) or {})
    if isinstance(err, BusyError):
        headers["Retry-After"] = str(err.retry_after)
    if status_of(err) == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return headers


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn every failure into a JSON error."""

    @app.exception_handler(RagtuneError)
    async def ragtune_error(request: Request, err: RagtuneError) -> JSONResponse:
        return JSONResponse(error_payload(err), err.http_status, headers=_headers(err))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, err: RequestValidationError) -> JSONResponse:
        problems = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}"
                    for e in err.errors()]
        message = "invalid request: " + "; ".join(problems)
        details = [{"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
                   for e in err.errors()]
        return JSONResponse(error_payload(err, 422, message, details=details), 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(error_payload(err), err.status_code, headers=_headers(err))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, err: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(error_payload(err, 500), 500)
