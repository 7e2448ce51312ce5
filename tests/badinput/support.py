"""Shared helpers for the bad-input tests: a small world of users and
conversations, exact error-frame checks, snapshots of everything stored that
a client can see, and a check that chatting still works."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgspec
from multidict import CIMultiDictProxy

from tests.conftest import RunningServer, ServerFactory
from tests.wire import WAIT_S, Account, Http, Raw

# Every error code of docs/protocol.md ("Error codes" and the HTTP additions).
WS_ERROR_CODES = frozenset(
    {
        "bad_frame",
        "unknown_type",
        "too_large",
        "unauthorized",
        "not_member",
        "not_found",
        "rate_limited",
        "unavailable",
        "internal",
    }
)
HTTP_ERROR_CODES = WS_ERROR_CODES | {"bad_request", "forbidden", "conflict"}
_unique = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}{next(_unique)}"


@dataclass
class World:
    """alice and bob share ``cid`` (direct); bob and carol share ``foreign``
    (alice is not a member)."""

    server: RunningServer
    session: aiohttp.ClientSession
    http: Http
    alice: Account
    bob: Account
    carol: Account
    cid: str
    foreign: str

    async def raw(self, who: Account) -> Raw:
        raw, _ = await Raw.connect(self.session, self.server.ws_url, who.token)
        return raw

    async def open(self) -> Raw:
        """A socket that has not said hello."""
        return await Raw.open(self.session, self.server.ws_url)

    async def snapshot(self) -> list[Any]:
        """Everything stored that the three users can see: their conversation
        lists (last_seq and cursors) and the full history of both conversations."""
        seen: list[Any] = []
        for who in (self.alice, self.bob, self.carol):
            status, body = await self.http.call("GET", "/v1/conversations", who.token)
            assert status == 200, body
            seen.append(body)
        for owner, cid in ((self.alice, self.cid), (self.bob, self.foreign)):
            status, body = await self.http.call(
                "GET", f"/v1/conversations/{cid}/messages?limit=200", owner.token
            )
            assert status == 200, body
            seen.append(body)
        return seen

    async def last_seq(self, who: Account, cid: str) -> int:
        status, body = await self.http.call("GET", "/v1/conversations", who.token)
        assert status == 200, body
        for conv in body["conversations"]:
            if conv["conversation_id"] == cid:
                seq: int = conv["last_seq"]
                return seq
        raise AssertionError(f"{cid} not listed for {who.username}: {body}")

    async def history(self, who: Account, cid: str) -> list[dict[str, Any]]:
        status, body = await self.http.call(
            "GET", f"/v1/conversations/{cid}/messages?limit=200", who.token
        )
        assert status == 200, body
        messages: list[dict[str, Any]] = body["messages"]
        return messages

    async def chat_works(self, sender_raw: Raw | None = None) -> None:
        """alice (over ``sender_raw`` if given, else a fresh connection) sends to
        bob, gets her ack with the next seq, and bob (a fresh connection) gets the msg."""
        expected = await self.last_seq(self.alice, self.cid) + 1
        bob = await self.raw(self.bob)
        sender = sender_raw if sender_raw is not None else await self.raw(self.alice)
        cmid = unique("ok-")
        await sender.send(
            {
                "type": "send",
                "id": cmid + "-r",
                "conversation_id": self.cid,
                "client_msg_id": cmid,
                "content": {"text": "still here"},
            }
        )
        ack = await sender.recv_type("ack")
        assert ack["id"] == cmid + "-r", ack
        assert ack["client_msg_id"] == cmid, ack
        assert ack["seq"] == expected, ack
        assert ack["duplicate"] is False, ack
        msg = await bob.recv_type("msg")
        assert msg["seq"] == expected, msg
        assert msg["client_msg_id"] == cmid, msg
        assert msg["content"] == {"text": "still here"}, msg
        await bob.close()
        if sender_raw is None:
            await sender.close()

    async def ping_works(self, raw: Raw) -> None:
        pid = unique("ping-")
        await raw.send({"type": "ping", "id": pid})
        assert await raw.recv_type("pong") == {"type": "pong", "id": pid}


async def make_world(server: RunningServer, session: aiohttp.ClientSession) -> World:
    http = Http(session, server.http_url)
    alice = await http.account(unique("alice"))
    bob = await http.account(unique("bob"))
    carol = await http.account(unique("carol"))
    cid = await http.conversation(alice, "direct", [bob])
    foreign = await http.conversation(bob, "direct", [carol])
    return World(server, session, http, alice, bob, carol, cid, foreign)


def assert_error(
    frame: dict[str, Any],
    code: str,
    ref: str | None = None,
    retryable: bool = False,
) -> None:
    """``frame`` is exactly the error frame of docs/protocol.md: code, retryable, a
    message, ``ref`` only when given, ``retry_after_ms`` only for rate_limited."""
    assert frame.get("type") == "error", frame
    assert frame["code"] == code, frame
    assert frame["retryable"] is retryable, frame
    assert isinstance(frame.get("message"), str), frame
    expected_keys = {"type", "code", "message", "retryable"}
    if ref is not None:
        expected_keys.add("ref")
        assert frame.get("ref") == ref, frame
    if code == "rate_limited":
        expected_keys.add("retry_after_ms")
        assert isinstance(frame.get("retry_after_ms"), int), frame
        assert frame["retry_after_ms"] > 0, frame
    assert set(frame) == expected_keys, frame


async def expect_error(
    raw: Raw, code: str, ref: str | None = None, retryable: bool = False
) -> dict[str, Any]:
    frame = await raw.recv()
    assert_error(frame, code, ref, retryable)
    return frame


async def expect_closed(raw: Raw, code: int, timeout: float = WAIT_S) -> None:
    """The next thing on ``raw`` is the server closing it with ``code``."""
    frame = await raw.recv(timeout)
    assert frame["type"] == "_closed", frame
    assert frame["code"] == code, frame


async def world_on(
    server_factory: ServerFactory, session: aiohttp.ClientSession, **overrides: Any
) -> World:
    """A world on a server started with these settings."""
    return await make_world(await server_factory(**overrides), session)


async def rejected_on_open_connection(
    world: World, payload: str | dict[str, Any], code: str, ref: str | None
) -> None:
    """Send ``payload`` after hello; expect exactly one error, no stored change,
    and the same connection and other clients still working."""
    before = await world.snapshot()
    raw = await world.raw(world.alice)
    if isinstance(payload, str):
        await raw.send_text(payload)
    else:
        await raw.send(payload)
    await expect_error(raw, code, ref)
    await world.ping_works(raw)
    assert await world.snapshot() == before
    await world.chat_works(raw)
    await world.chat_works()
    await raw.close()


STATUS = {
    "bad_request": 400,
    "bad_frame": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_member": 403,
    "not_found": 404,
    "conflict": 409,
    "too_large": 413,
    "rate_limited": 429,
}


async def raw_call(
    world: World,
    method: str,
    path: str,
    token: str | None = None,
    data: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, CIMultiDictProxy[str]]:
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    if token:
        all_headers["Authorization"] = f"Bearer {token}"
    async with (
        asyncio.timeout(WAIT_S),
        world.session.request(
            method, world.http.base + path, data=data, headers=all_headers
        ) as resp,
    ):
        body = await resp.read()
        assert resp.content_type == "application/json", (resp.status, body)
        return resp.status, msgspec.json.decode(body) if body else None, resp.headers


def assert_http_error(status: int, body: Any, code: str) -> None:
    assert code in HTTP_ERROR_CODES
    assert status == STATUS[code], (status, body)
    assert isinstance(body, dict), body
    assert set(body) == {"error"}, body
    error = body["error"]
    assert error["code"] == code, body
    assert isinstance(error["message"], str), body
    assert error["retryable"] is (code in {"rate_limited", "unavailable", "internal"}), body
    assert set(error) <= {"code", "message", "retryable", "retry_after_ms"}, body
