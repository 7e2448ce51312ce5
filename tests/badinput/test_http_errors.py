"""HTTP rejections of docs/protocol.md: each answers ``{"error": {"code", "message",
"retryable"}}`` with the code's status, and changes nothing stored."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
import pytest

from tests.badinput.support import (
    World,
    assert_http_error,
    raw_call,
    unique,
    world_on,
)
from tests.conftest import ServerFactory

# -- register and login ------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"username": "ab", "password": "long enough"},
        {"username": "a" * 33, "password": "long enough"},
        {"username": "bad name", "password": "long enough"},
        {"username": "bad/name", "password": "long enough"},
        {"username": "émile", "password": "long enough"},
        {"username": "", "password": "long enough"},
        {"username": "okname", "password": "short77"},
        {"username": "okname", "password": ""},
        {"username": "okname"},
        {"password": "long enough"},
        {"username": 12345, "password": "long enough"},
        {"username": "okname", "password": 12345678},
        [],
        "okname",
    ],
    ids=repr,
)
async def test_register_validation_is_bad_request(world: World, body: Any) -> None:
    status, answer = await world.http.call("POST", "/v1/auth/register", json=body)
    assert_http_error(status, answer, "bad_request")
    if isinstance(body, dict) and isinstance(body.get("username"), str) and body["username"]:
        # Nothing was created: the name is still free.
        status, answer = await world.http.call(
            "GET", f"/v1/users?username={body['username']}", world.alice.token
        )
        assert status in (400, 404), answer


async def test_register_boundaries_are_accepted(world: World) -> None:
    for name in ("abc", "A" * 32, "a_b.c-9"):
        status, body = await world.http.call(
            "POST", "/v1/auth/register", json={"username": name, "password": "12345678"}
        )
        assert status == 201, body


async def test_register_taken_is_conflict(world: World) -> None:
    status, body = await world.http.call(
        "POST", "/v1/auth/register", json={"username": world.alice.username, "password": "x" * 9}
    )
    assert_http_error(status, body, "conflict")
    # The original account and its password are untouched.
    await world.http.login(world.alice.username)


@pytest.mark.parametrize("case", ["wrong-password", "unknown-user", "empty"])
async def test_login_failure_is_unauthorized(world: World, case: str) -> None:
    body = {
        "wrong-password": {"username": world.alice.username, "password": "wrong horse"},
        "unknown-user": {"username": "nobody_here", "password": "correct horse"},
        "empty": {"username": "", "password": ""},
    }[case]
    status, answer = await world.http.call("POST", "/v1/auth/login", json=body)
    assert_http_error(status, answer, "unauthorized")


@pytest.mark.parametrize(
    "header",
    [None, "", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer garbage", "Bearer tdg_nope"],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/conversations"),
        ("POST", "/v1/conversations"),
        ("GET", "/v1/users?username=x"),
        ("POST", "/v1/auth/logout"),
        ("POST", "/v1/conversations/{cid}/messages"),
        ("GET", "/v1/conversations/{cid}/messages"),
    ],
)
async def test_missing_or_invalid_bearer_is_unauthorized(
    world: World, header: str | None, method: str, path: str
) -> None:
    before = await world.snapshot()
    headers = {} if header is None else {"Authorization": header}
    body = b'{"client_msg_id": "x", "content": {"text": "x"}}'
    status, answer, _ = await raw_call(
        world, method, path.format(cid=world.cid), data=body, headers=headers
    )
    assert_http_error(status, answer, "unauthorized")
    assert await world.snapshot() == before


async def test_revoked_token_is_unauthorized(world: World) -> None:
    device = await world.http.login(world.alice.username, "other")
    status, _ = await world.http.call("POST", "/v1/auth/logout", device.token)
    assert status == 204
    status, body = await world.http.call("GET", "/v1/conversations", device.token)
    assert_http_error(status, body, "unauthorized")
    # The user's other device still works.
    status, body = await world.http.call("GET", "/v1/conversations", world.alice.token)
    assert status == 200, body


# -- malformed and oversized bodies -----------------------------------------------------------


POST_ENDPOINTS = [
    ("/v1/auth/register", False),
    ("/v1/auth/login", False),
    ("/v1/conversations", True),
    ("/v1/conversations/{cid}/members", True),
    ("/v1/conversations/{cid}/messages", True),
]


@pytest.mark.parametrize(("path", "auth"), POST_ENDPOINTS)
@pytest.mark.parametrize(
    "data", [b"", b"{", b"not json", b"\xff\xfe\x00", b'{"a": 1,}', b"[1, 2"], ids=repr
)
async def test_malformed_json_body_is_bad_request(
    world: World, path: str, auth: bool, data: bytes
) -> None:
    before = await world.snapshot()
    token = world.alice.token if auth else None
    status, body, _ = await raw_call(world, "POST", path.format(cid=world.cid), token, data)
    assert_http_error(status, body, "bad_request")
    assert await world.snapshot() == before


@pytest.mark.parametrize(("path", "auth"), POST_ENDPOINTS)
@pytest.mark.parametrize("chunked", [False, True])
async def test_body_over_the_limit_is_too_large(
    server_factory: ServerFactory,
    session: aiohttp.ClientSession,
    path: str,
    auth: bool,
    chunked: bool,
) -> None:
    world = await world_on(server_factory, session, max_frame_bytes=4096)
    before = await world.snapshot()
    payload = msgspec.json.encode(
        {"client_msg_id": "big", "content": {"text": "x" * 6000}, "username": "x" * 6000}
    )

    async def stream() -> AsyncIterator[bytes]:
        for i in range(0, len(payload), 1000):
            yield payload[i : i + 1000]

    token = world.alice.token if auth else None
    data: Any = stream() if chunked else payload
    status, body, _ = await raw_call(world, "POST", path.format(cid=world.cid), token, data)
    assert_http_error(status, body, "too_large")
    assert await world.snapshot() == before


async def test_post_message_over_the_content_limit_is_too_large(
    server_factory: ServerFactory, session: aiohttp.ClientSession
) -> None:
    world = await world_on(server_factory, session, max_content_bytes=1000)
    before = await world.snapshot()
    status, body = await world.http.call(
        "POST",
        f"/v1/conversations/{world.cid}/messages",
        world.alice.token,
        {"client_msg_id": "big", "content": {"text": "x" * 1200}},
    )
    assert_http_error(status, body, "too_large")
    assert await world.snapshot() == before


@pytest.mark.parametrize(
    "content",
    ["hi", ["hi"], None, 5, {}, {"kind": "member_added"}, {"kind": "text"}, {"text": 3}],
    ids=repr,
)
async def test_post_message_with_bad_content_is_rejected(world: World, content: Any) -> None:
    """The same rules as the send frame: content must be a client-sendable object."""
    before = await world.snapshot()
    status, body = await world.http.call(
        "POST",
        f"/v1/conversations/{world.cid}/messages",
        world.alice.token,
        {"client_msg_id": unique("bc"), "content": content},
    )
    assert status == 400, body
    assert body["error"]["code"] in {"bad_request", "bad_frame"}, body
    assert_http_error(status, body, body["error"]["code"])
    assert await world.snapshot() == before


# -- membership and permissions -----------------------------------------------------------------


async def test_history_of_someone_elses_conversation_is_not_member(world: World) -> None:
    status, body = await world.http.call(
        "GET", f"/v1/conversations/{world.foreign}/messages", world.alice.token
    )
    assert_http_error(status, body, "not_member")
    for path in (
        f"/v1/conversations/{world.foreign}",
        f"/v1/conversations/{world.foreign}/receipts",
    ):
        status, body = await world.http.call("GET", path, world.alice.token)
        assert_http_error(status, body, "not_member")


async def test_post_to_someone_elses_conversation_is_not_member(world: World) -> None:
    before = await world.snapshot()
    status, body = await world.http.call(
        "POST",
        f"/v1/conversations/{world.foreign}/messages",
        world.alice.token,
        {"client_msg_id": unique("x"), "content": {"text": "intruder"}},
    )
    assert_http_error(status, body, "not_member")
    assert await world.snapshot() == before


async def test_members_change_by_a_non_admin_is_forbidden(world: World) -> None:
    dave = await world.http.account(unique("dave"))
    status, body = await world.http.call(
        "POST",
        "/v1/conversations",
        world.alice.token,
        {"kind": "group", "title": "g", "members": [world.bob.user_id, world.carol.user_id]},
    )
    assert status == 201, body
    gid = body["conversation_id"]
    history_before = await world.history(world.alice, gid)
    status, body = await world.http.call(
        "POST", f"/v1/conversations/{gid}/members", world.bob.token, {"user_ids": [dave.user_id]}
    )
    assert_http_error(status, body, "forbidden")
    status, body = await world.http.call(
        "DELETE", f"/v1/conversations/{gid}/members/{world.carol.user_id}", world.bob.token
    )
    assert_http_error(status, body, "forbidden")
    # A non-member cannot change it either.
    status, body = await world.http.call(
        "POST", f"/v1/conversations/{gid}/members", dave.token, {"user_ids": [dave.user_id]}
    )
    assert_http_error(status, body, "not_member")
    assert await world.history(world.alice, gid) == history_before
    status, body = await world.http.call("GET", f"/v1/conversations/{gid}", world.alice.token)
    assert status == 200, body
    assert {m["user_id"] for m in body["members"]} == {
        world.alice.user_id,
        world.bob.user_id,
        world.carol.user_id,
    }


async def test_members_of_a_direct_conversation_are_fixed(world: World) -> None:
    before = await world.snapshot()
    status, body = await world.http.call(
        "POST",
        f"/v1/conversations/{world.cid}/members",
        world.alice.token,
        {"user_ids": [world.carol.user_id]},
    )
    assert_http_error(status, body, "bad_request")
    assert await world.snapshot() == before


@pytest.mark.parametrize("others", [0, 2])
async def test_direct_needs_exactly_one_other(world: World, others: int) -> None:
    before = await world.snapshot()
    members = [world.bob.user_id, world.carol.user_id][:others]
    status, body = await world.http.call(
        "POST", "/v1/conversations", world.alice.token, {"kind": "direct", "members": members}
    )
    assert_http_error(status, body, "bad_request")
    assert await world.snapshot() == before


async def test_conversation_with_unknown_users_is_rejected(world: World) -> None:
    before = await world.snapshot()
    status, body = await world.http.call(
        "POST",
        "/v1/conversations",
        world.alice.token,
        {"kind": "group", "title": "g", "members": ["u_nobody"]},
    )
    assert 400 <= status < 500, body
    assert_http_error(status, body, body["error"]["code"])
    assert await world.snapshot() == before


# -- query parameters ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "after_seq=-1",
        "after_seq=abc",
        "limit=1e3",
        "before_seq=1.5",
        "after_seq=\u00b2",
        "limit=\u2460",
        "after_seq=" + "9" * 17,
    ],
    ids=repr,
)
async def test_bad_history_query_is_bad_request(world: World, query: str) -> None:
    """Unicode "digits" that int() rejects ("²", "①") are a bad request, not a 500."""
    status, body = await world.http.call(
        "GET", f"/v1/conversations/{world.cid}/messages?{query}", world.alice.token
    )
    assert_http_error(status, body, "bad_request")


# -- endpoints and rate limits ------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/nope"),
        ("GET", "/nope"),
        ("POST", "/v1/conversations/x/nope"),
        ("GET", "/v2/conversations"),
    ],
)
async def test_unknown_endpoint_is_not_found_json(world: World, method: str, path: str) -> None:
    status, body, _ = await raw_call(world, method, path, world.alice.token)
    assert_http_error(status, body, "not_found")


async def test_unknown_user_is_not_found(world: World) -> None:
    status, body = await world.http.call("GET", "/v1/users/u_nobody", world.alice.token)
    assert_http_error(status, body, "not_found")
    status, body = await world.http.call("GET", "/v1/users?username=nobody", world.alice.token)
    assert_http_error(status, body, "not_found")


async def test_http_send_rate_limit_is_429_with_retry_after(
    server_factory: ServerFactory, session: aiohttp.ClientSession
) -> None:
    world = await world_on(server_factory, session, send_rate_per_s=1, send_burst=3)
    path = f"/v1/conversations/{world.cid}/messages"
    for n in range(3):
        status, body = await world.http.call(
            "POST", path, world.alice.token, {"client_msg_id": f"h{n}", "content": {"text": "x"}}
        )
        assert status == 201, body
    before = await world.snapshot()
    status, body, headers = await raw_call(
        world,
        "POST",
        path,
        world.alice.token,
        b'{"client_msg_id": "h3", "content": {"text": "x"}}',
    )
    assert_http_error(status, body, "rate_limited")
    retry_after = headers.get("Retry-After")
    assert retry_after is not None, headers
    assert retry_after.isdecimal(), headers
    assert int(retry_after) >= 1
    retry_after_ms = body["error"].get("retry_after_ms")
    assert isinstance(retry_after_ms, int), body
    assert retry_after_ms > 0, body
    assert await world.snapshot() == before
    # Slowed, never refused: the same message goes through after the wait.
    await asyncio.sleep(retry_after_ms / 1000)
    status, body = await world.http.call(
        "POST", path, world.alice.token, {"client_msg_id": "h3", "content": {"text": "x"}}
    )
    assert status == 201, body
    assert body["seq"] == 4


# -- OpenAPI ----------------------------------------------------------------------


async def test_openapi_lists_every_v1_route(world: World) -> None:
    status, doc = await world.http.call("GET", "/openapi.json")
    assert status == 200
    assert isinstance(doc, dict)
    assert str(doc.get("openapi", "")).startswith("3.1"), doc.get("openapi")
    for key in ("title", "version"):
        assert isinstance(doc["info"][key], str), doc["info"]
        assert doc["info"][key], doc["info"]
    schemas = doc["components"]["schemas"]
    documented = {
        (method.upper(), path)
        for path, ops in doc["paths"].items()
        for method in ops
        if method in {"get", "post", "put", "patch", "delete"}
    }
    served = set()
    for route in world.server.runner.app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        if not isinstance(path, str) or not path.startswith("/v1/") or route.method == "HEAD":
            continue
        if path == "/v1/ws":  # the WebSocket upgrade is described in docs/protocol.md
            continue
        served.add((route.method, path))
    assert served, "no /v1 routes found"
    assert served <= documented, sorted(served - documented)
    assert documented - {(m, p) for m, p in documented if not p.startswith("/v1/")} <= served

    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
            return found + [r for v in node.values() for r in refs(v)]
        if isinstance(node, list):
            return [r for v in node for r in refs(v)]
        return []

    for ref in refs(doc):
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.rsplit("/", 1)[1] in schemas, ref
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert op.get("responses"), (method, path)
            for name in [p[1:-1] for p in path.split("/") if p.startswith("{")]:
                params = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
                assert name in params, (method, path, name)


async def test_openapi_documents_parameters_and_error_statuses(world: World) -> None:
    status, doc = await world.http.call("GET", "/openapi.json")
    assert status == 200, doc
    paths = doc["paths"]

    def params(path: str, method: str) -> dict[str, dict[str, Any]]:
        return {p["name"]: p for p in paths[path][method].get("parameters", [])}

    username = params("/v1/users", "get")["username"]
    assert username["in"] == "query", username
    assert username["required"] is True, username
    assert username["schema"]["type"] == "string", username
    history = params("/v1/conversations/{cid}/messages", "get")
    assert set(history) == {"cid", "after_seq", "before_seq", "limit", "view"}, history
    assert history["cid"]["in"] == "path", history
    assert history["cid"]["schema"]["maxLength"] == 64, history
    for name in ("after_seq", "before_seq", "limit"):
        assert history[name]["in"] == "query", history[name]
        assert history[name]["required"] is False, history[name]
        assert history[name]["schema"]["type"] == "integer", history[name]
        assert history[name]["schema"]["minimum"] == 0, history[name]
    error_ref = {"$ref": "#/components/schemas/ErrorBody"}
    detail = doc["components"]["schemas"]["ErrorDetail"]
    assert {"code", "message", "retryable"} <= set(detail["required"]), detail
    expected = {
        ("get", "/v1/conversations/{cid}/messages"): {"400", "401", "403", "404", "500", "503"},
        ("post", "/v1/conversations/{cid}/messages"): {
            "400",
            "401",
            "403",
            "404",
            "413",
            "429",
            "500",
            "503",
        },
        ("post", "/v1/auth/register"): {"400", "409", "413", "500", "503"},
        ("get", "/v1/users"): {"400", "401", "404", "500", "503"},
    }
    for (method, path), statuses in expected.items():
        responses = paths[path][method]["responses"]
        errors = {s for s in responses if s >= "400"}
        assert errors == statuses, (method, path, sorted(errors))
        for error_status in statuses:
            assert responses[error_status]["content"]["application/json"]["schema"] == error_ref
    for path, ops in paths.items():
        for method, op in ops.items():
            assert "default" not in op["responses"], (method, path)
