"""How the HTTP API answers: JSON bodies, and every error as the protocol's
``{"error": {"code", "message", "retryable"}}`` with the code's status, so
HTTP and WebSocket reject the same input with the same code."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable

import msgspec
from aiohttp import web

from tidings.core.errors import ErrorCode, TidingsError
from tidings.http import schemas
from tidings.observability.metrics import Metrics

log = logging.getLogger("tidings.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_encoder = msgspec.json.Encoder()


def json_response(body: msgspec.Struct, status: int = 200) -> web.Response:
    return web.Response(body=_encoder.encode(body), status=status, content_type="application/json")


def error_response(error: TidingsError) -> web.Response:
    detail = schemas.ErrorDetail(
        code=error.code.value,
        message=error.message,
        retryable=error.retryable,
        retry_after_ms=error.retry_after_ms,
    )
    response = json_response(schemas.ErrorBody(detail), error.http_status)
    if error.retry_after_ms is not None:
        response.headers["Retry-After"] = str(max(1, -(-error.retry_after_ms // 1000)))
    return response


def guarded(metrics: Metrics, handler: Handler) -> Handler:
    """Wrap an HTTP handler so that every error becomes the protocol's JSON body.

    A wrapper per HTTP route rather than an aiohttp middleware: a middleware
    would also wrap the WebSocket handler, and its frame would stay suspended
    for the whole life of every connection, a cost paid by every idle
    connection (docs/benchmarks.md, "What bounds throughput (the missed
    target)" has the figure).
    """

    @functools.wraps(handler)
    async def guard(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except TidingsError as exc:
            metrics.errors.labels(exc.code.value).inc()
            return error_response(exc)
        except web.HTTPRequestEntityTooLarge:
            return error_response(TidingsError(ErrorCode.TOO_LARGE, "request body too large"))
        except web.HTTPException:
            raise
        except Exception:
            log.exception("request failed", extra={"path": request.path})
            metrics.errors.labels(ErrorCode.INTERNAL.value).inc()
            return error_response(TidingsError(ErrorCode.INTERNAL, "internal error"))

    return guard


CATCH_ALL = "/{tail:.*}"


async def no_such_route(request: web.Request) -> web.StreamResponse:
    """The catch-all route: JSON ``not_found``, or ``bad_request`` for a known
    path asked with a method it does not take (aiohttp would answer text)."""
    for resource in request.app.router.resources():
        if resource.canonical == CATCH_ALL:
            continue
        match, allowed = await resource.resolve(request)
        if match is None and allowed:
            raise TidingsError(
                ErrorCode.BAD_REQUEST,
                f"method not allowed; use {', '.join(sorted(allowed))}",
            )
    raise TidingsError(ErrorCode.NOT_FOUND, "no such endpoint")
