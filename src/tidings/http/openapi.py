"""The OpenAPI 3.1 document served at /openapi.json, generated from the routes.

Everything comes from the :class:`~tidings.http.routes.Route` declarations the
server validates with: parameters from each route's parameters Struct, bodies
and replies from its msgspec types, and one response per error status it can
answer, so the document cannot drift from what the server does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from tidings import __version__
from tidings.core.errors import HTTP_STATUS
from tidings.http import schemas
from tidings.http.routes import AnyRoute, Media

_REF = "#/components/schemas/{name}"


def _ref(kind: type) -> dict[str, str]:
    return {"$ref": _REF.format(name=kind.__name__)}


def _query_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A query string cannot say null: an optional parameter is simply left out."""
    options = [s for s in schema.get("anyOf", ()) if s.get("type") != "null"]
    if len(options) == 1:
        rest = {k: v for k, v in schema.items() if k != "anyOf"}
        schema = {**options[0], **rest}
    if schema.get("default", 0) is None:
        schema = {k: v for k, v in schema.items() if k != "default"}
    return schema


def _parameters(route: AnyRoute) -> list[dict[str, Any]]:
    _, components = msgspec.json.schema_components([route.params], ref_template=_REF)
    struct = components[route.params.__name__]
    required = set(struct.get("required", ()))
    params = []
    for name, schema in struct.get("properties", {}).items():
        where = "path" if name in route.path_names else "query"
        param: dict[str, Any] = {
            "name": name,
            "in": where,
            "required": where == "path" or name in required,
            "schema": _query_schema(schema),
        }
        description = param["schema"].pop("description", None)
        if description:
            param["description"] = description
        params.append(param)
    return params


def _content(reply: type | tuple[type, ...] | Media) -> dict[str, Any]:
    if isinstance(reply, Media):
        return {reply.content_type: {"schema": reply.schema}}
    if isinstance(reply, tuple):
        return {"application/json": {"schema": {"anyOf": [_ref(kind) for kind in reply]}}}
    return {"application/json": {"schema": _ref(reply)}}


def _responses(route: AnyRoute) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status, reply in sorted(route.replies.items()):
        entry: dict[str, Any] = {"description": "OK" if status < 300 else "see the body"}
        if reply is not None:
            entry["content"] = _content(reply)
        responses[str(status)] = entry
    by_status: dict[int, list[str]] = {}
    for code in sorted(route.error_codes):
        by_status.setdefault(HTTP_STATUS[code], []).append(code.value)
    for status, codes in sorted(by_status.items()):
        if str(status) in responses:
            raise ValueError(f"{route.path}: {status} is both a reply and an error")
        responses[str(status)] = {
            "description": "error: " + ", ".join(codes),
            "content": _content(schemas.ErrorBody),
        }
    return responses


def build_openapi(routes: Sequence[AnyRoute]) -> dict[str, Any]:
    kinds: set[type] = {schemas.ErrorBody}
    for route in routes:
        if route.body is not None:
            kinds.add(route.body)
        for reply in route.replies.values():
            if isinstance(reply, type):
                kinds.add(reply)
            elif isinstance(reply, tuple):
                kinds.update(reply)
    _, components = msgspec.json.schema_components(
        sorted(kinds, key=lambda k: k.__name__), ref_template=_REF
    )
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        op: dict[str, Any] = {"summary": route.summary}
        params = _parameters(route)
        if params:
            op["parameters"] = params
        if route.body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": _ref(route.body)}},
            }
        op["responses"] = _responses(route)
        if route.auth:
            op["security"] = [{"bearer": []}]
        paths.setdefault(route.path, {})[route.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "Tidings", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
