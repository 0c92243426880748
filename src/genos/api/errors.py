"""Every API error is ``{"error": {"code", "message"}}``, a 4xx where the input is at fault.

GenOS errors keep their own ``code`` (see :mod:`genos.errors`); the status
comes from the class. Validation errors, unknown routes, wrong methods and
oversized bodies get the same shape, and anything unexpected is logged and
answered ``500 internal`` without a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from genos import errors

log = logging.getLogger("genos.api")

MAX_BODY = 1 << 20  # 1 MiB: a spec is a few KiB

STATUS: tuple[tuple[type[errors.GenOSError], int], ...] = (
    (errors.NotFoundError, 404),
    (errors.StateError, 409),
    (errors.ConflictError, 409),
    (errors.QuotaError, 429),
    (errors.CapacityError, 422),
    (errors.CapabilityError, 422),
    (errors.TokenError, 401),
    (errors.InputError, 422),
    (errors.WaitTimeoutError, 504),
    (errors.ClosedError, 503),
    (errors.RegistryError, 503),
    (errors.ClusterUnavailableError, 503),
    (errors.ExternalError, 502),
)
HTTP_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
}


class ApiError(Exception):
    """An answer the API gives on purpose: a status, a code and a message."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def body(code: str, message: str) -> dict[str, Any]:
    """The JSON body of an error."""
    return {"error": {"code": code, "message": message}}


def reply(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """An error response (401s say ``WWW-Authenticate: Bearer``)."""
    extra = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    return JSONResponse(body(code, message), status_code=status, headers=extra | (headers or {}))


def status_of(exc: errors.GenOSError) -> int:
    """The HTTP status of a GenOS error."""
    for kind, status in STATUS:
        if isinstance(exc, kind):
            return status
    return 500


def one_line(exc: RequestValidationError) -> str:
    """The first validation problem as one line: ``body.spec.tier: Input should be ...``."""
    problems = exc.errors()
    if not problems:
        return "invalid request"
    first = problems[0]
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"{where}: {first.get('msg', 'invalid')}{more}"[:500]


def install(app: FastAPI) -> None:
    """Register the handlers that give every error the JSON shape."""

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return reply(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(errors.GenOSError)
    async def genos_error(_request: Request, exc: errors.GenOSError) -> JSONResponse:
        status = status_of(exc)
        if status >= 500:
            log.warning("%s: %s", type(exc).__name__, exc)
        answer = reply(status, exc.code, str(exc).splitlines()[0][:500] if str(exc) else exc.code)
        holder = getattr(exc, "holder", None)
        if holder is not None:  # LeaseHeldError: who has the desktop
            data = body(exc.code, str(exc).splitlines()[0][:500])
            data["error"]["holder"] = holder
            answer = JSONResponse(data, status_code=status)
        return answer

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return reply(422, "invalid_input", one_line(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = HTTP_CODES.get(exc.status_code, "http_error")
        return reply(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error", exc_info=exc)
        return reply(500, "internal", "internal error; the server log has the details")


class BodyLimit:
    """ASGI middleware: bodies over ``limit`` bytes get 413 (declared or streamed)."""

    def __init__(
        self, app: ASGIApp, limit: int = MAX_BODY, exempt: Callable[[str], bool] | None = None
    ) -> None:
        self.app = app
        self.limit = limit
        self.exempt = exempt  # paths that check their own size (file uploads)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (self.exempt is not None and self.exempt(scope["path"])):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", ())).get(b"content-length")
        if declared is not None:
            if not declared.isdigit() or int(declared) > self.limit:
                await _send_413(send, self.limit)
                return
            await self.app(scope, receive, send)
            return
        # No trustworthy length (chunked): read up to the limit first, then replay.
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            seen += len(chunks[-1])
            if seen > self.limit:
                await _send_413(send, self.limit)
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)


async def _send_413(send: Send, limit: int) -> None:
    response = reply(413, "too_large", f"request body over {limit} bytes")
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
        }
    )
    await send({"type": "http.response.body", "body": response.body})
