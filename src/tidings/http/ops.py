"""The operator routes: liveness, readiness, metrics and the OpenAPI document.

Declared like the API's routes, so that ``/openapi.json`` documents them too
(itself included).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import msgspec
from aiohttp import web

from tidings.http import schemas
from tidings.http.openapi import build_openapi
from tidings.http.respond import json_response
from tidings.http.routes import AnyRoute, Call, Media, NoParams, Route

Readiness = Callable[[], Awaitable[tuple[bool, dict[str, str]]]]
Render = Callable[[], bytes]

_PROMETHEUS = Media("text/plain", {"type": "string"})
_DOCUMENT = Media("application/json", {"type": "object"})


def ops_routes(
    readiness: Readiness, render_metrics: Render, documented: Callable[[], Sequence[AnyRoute]]
) -> list[AnyRoute]:
    """The operator routes; ``/openapi.json`` documents ``documented()``: every
    route of the node, these included, known only once every feature has
    plugged in (so the document is built at its first request, then kept)."""

    async def healthz(_: Call[NoParams, None]) -> web.Response:
        return json_response(schemas.HealthOut("ok"))

    async def readyz(_: Call[NoParams, None]) -> web.Response:
        ok, checks = await readiness()
        return json_response(
            schemas.HealthOut("ok" if ok else "unready", checks), 200 if ok else 503
        )

    async def metrics(_: Call[NoParams, None]) -> web.Response:
        return web.Response(body=render_metrics(), content_type="text/plain", charset="utf-8")

    document: list[bytes] = []

    async def openapi_json(_: Call[NoParams, None]) -> web.Response:
        if not document:
            document.append(msgspec.json.encode(build_openapi(documented())))
        return web.Response(body=document[0], content_type="application/json")

    return [
        Route(
            "GET",
            "/healthz",
            "Liveness",
            healthz,
            NoParams,
            None,
            {200: schemas.HealthOut},
            auth=False,
        ),
        Route(
            "GET",
            "/readyz",
            "Readiness: store and bus reachable, not draining",
            readyz,
            NoParams,
            None,
            {200: schemas.HealthOut, 503: schemas.HealthOut},
            auth=False,
        ),
        Route(
            "GET",
            "/metrics",
            "Prometheus metrics",
            metrics,
            NoParams,
            None,
            {200: _PROMETHEUS},
            auth=False,
        ),
        Route(
            "GET",
            "/openapi.json",
            "This document",
            openapi_json,
            NoParams,
            None,
            {200: _DOCUMENT},
            auth=False,
        ),
    ]
