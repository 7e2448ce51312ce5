"""The OpenAPI 3.1 document served at /openapi.json.

Schemas are generated from the same msgspec types that decode requests and
encode responses, so the document cannot drift from what the server accepts.
"""

from __future__ import annotations

from typing import Any

import msgspec

from tidings import __version__
from tidings.core.frames import (
    CreateConversationBody,
    LoginBody,
    MembersBody,
    PostMessageBody,
    RegisterBody,
)
from tidings.http import schemas

# (method, path, summary, request body type, {status: response type}, needs auth)
Endpoint = tuple[str, str, str, type | None, dict[int, type | None], bool]

ENDPOINTS: list[Endpoint] = [
    (
        "post",
        "/v1/auth/register",
        "Register a user",
        RegisterBody,
        {201: schemas.RegisterOut, 409: schemas.ErrorBody},
        False,
    ),
    (
        "post",
        "/v1/auth/login",
        "Log in: creates a device and returns its bearer token",
        LoginBody,
        {200: schemas.LoginOut, 401: schemas.ErrorBody},
        False,
    ),
    ("post", "/v1/auth/logout", "Revoke this device's token", None, {204: None}, True),
    ("get", "/v1/users", "Find a user by ?username=", None, {200: schemas.UserOut}, True),
    ("get", "/v1/users/{user_id}", "A user's public profile", None, {200: schemas.UserOut}, True),
    (
        "post",
        "/v1/conversations",
        "Create a direct conversation or a group",
        CreateConversationBody,
        {201: schemas.ConversationOut, 200: schemas.ConversationOut},
        True,
    ),
    (
        "get",
        "/v1/conversations",
        "The caller's conversations with cursors and unread counts",
        None,
        {200: schemas.ConversationListOut},
        True,
    ),
    (
        "get",
        "/v1/conversations/{cid}",
        "One conversation with its members",
        None,
        {200: schemas.ConversationOut},
        True,
    ),
    (
        "post",
        "/v1/conversations/{cid}/members",
        "Add members (group admins)",
        MembersBody,
        {200: schemas.MembersChangedOut},
        True,
    ),
    (
        "delete",
        "/v1/conversations/{cid}/members/{user_id}",
        "Remove a member (group admins; anyone may remove themselves)",
        None,
        {200: schemas.MembersChangedOut},
        True,
    ),
    (
        "get",
        "/v1/conversations/{cid}/messages",
        "History by seq: ?after_seq=&before_seq=&limit= (members only)",
        None,
        {200: schemas.MessageListOut},
        True,
    ),
    (
        "post",
        "/v1/conversations/{cid}/messages",
        "Send a message (idempotent per client_msg_id)",
        PostMessageBody,
        {201: schemas.AckOut, 200: schemas.AckOut},
        True,
    ),
    (
        "get",
        "/v1/conversations/{cid}/receipts",
        "Every member's delivered/read cursors (?read_seq=N: only those who read up to N)",
        None,
        {200: schemas.MemberListOut},
        True,
    ),
    ("get", "/healthz", "Liveness", None, {200: schemas.HealthOut}, False),
    (
        "get",
        "/readyz",
        "Readiness: store and bus reachable",
        None,
        {200: schemas.HealthOut, 503: schemas.HealthOut},
        False,
    ),
]


def _ref(kind: type) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{kind.__name__}"}


def build_openapi() -> dict[str, Any]:
    kinds: set[type] = {schemas.ErrorBody}
    for _, _, _, req, responses, _ in ENDPOINTS:
        if req is not None:
            kinds.add(req)
        kinds.update(k for k in responses.values() if k is not None)
    _, components = msgspec.json.schema_components(
        sorted(kinds, key=lambda k: k.__name__), ref_template="#/components/schemas/{name}"
    )
    paths: dict[str, dict[str, Any]] = {}
    for method, path, summary, req, responses, auth in ENDPOINTS:
        op: dict[str, Any] = {"summary": summary, "responses": {}}
        params = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in ("cid", "user_id")
            if "{" + name + "}" in path
        ]
        if params:
            op["parameters"] = params
        if req is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": _ref(req)}},
            }
        for status, kind in responses.items():
            entry: dict[str, Any] = {"description": "OK" if status < 300 else "error"}
            if kind is not None:
                entry["content"] = {"application/json": {"schema": _ref(kind)}}
            op["responses"][str(status)] = entry
        op["responses"]["default"] = {
            "description": "error",
            "content": {"application/json": {"schema": _ref(schemas.ErrorBody)}},
        }
        if auth:
            op["security"] = [{"bearer": []}]
        paths.setdefault(path, {})[method] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "Tidings", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
