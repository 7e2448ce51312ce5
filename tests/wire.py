"""A raw protocol client for tests that check frames exactly.

Unlike the SDK it hides nothing: tests send any bytes they like and read every
frame the server writes, with a bound on every wait.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgspec

# Every wait in a test is bounded; a healthy local server answers in milliseconds.
WAIT_S = 10.0

_names = itertools.count()


@dataclass
class Account:
    username: str
    user_id: str
    token: str
    device_id: str


class Http:
    """Minimal HTTP helper over the public API."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str) -> None:
        self.session = session
        self.base = base_url

    async def call(
        self, method: str, path: str, token: str | None = None, json: Any = None
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with asyncio.timeout(WAIT_S):
            async with self.session.request(
                method, self.base + path, json=json, headers=headers
            ) as resp:
                body = await resp.read()
                return resp.status, (msgspec.json.decode(body) if body else None)

    async def account(self, username: str | None = None, device: str | None = None) -> Account:
        name = username or f"user{next(_names)}_{id(self) % 10000}"
        status, body = await self.call(
            "POST", "/v1/auth/register", json={"username": name, "password": "correct horse"}
        )
        assert status in (201, 409), body
        return await self.login(name, device)

    async def login(self, username: str, device: str | None = None) -> Account:
        status, body = await self.call(
            "POST",
            "/v1/auth/login",
            json={"username": username, "password": "correct horse", "device_name": device},
        )
        assert status == 200, body
        return Account(username, body["user_id"], body["token"], body["device_id"])

    async def conversation(self, owner: Account, kind: str, members: list[Account]) -> str:
        status, body = await self.call(
            "POST",
            "/v1/conversations",
            owner.token,
            {"kind": kind, "title": "t", "members": [m.user_id for m in members]},
        )
        assert status in (200, 201), body
        cid: str = body["conversation_id"]
        return cid


class Raw:
    """One WebSocket connection speaking raw frames."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    @classmethod
    async def open(cls, session: aiohttp.ClientSession, ws_url: str) -> Raw:
        async with asyncio.timeout(WAIT_S):
            ws = await session.ws_connect(ws_url, autoping=True, max_msg_size=0)
        return cls(ws)

    @classmethod
    async def connect(
        cls, session: aiohttp.ClientSession, ws_url: str, token: str
    ) -> tuple[Raw, dict[str, Any]]:
        raw = await cls.open(session, ws_url)
        await raw.send({"type": "hello", "token": token})
        welcome = await raw.recv()
        assert welcome["type"] == "welcome", welcome
        return raw, welcome

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send_str(msgspec.json.encode(frame).decode())

    async def send_burst(self, cid: str, tag: str, count: int) -> None:
        """Send ``count`` messages (``client_msg_id`` "tag-i", text "tag i")
        without waiting for acks, as a client flushing its outbox does."""
        for i in range(count):
            await self.send(
                {
                    "type": "send",
                    "conversation_id": cid,
                    "client_msg_id": f"{tag}-{i}",
                    "content": {"text": f"{tag} {i}"},
                }
            )

    async def send_text(self, text: str) -> None:
        await self.ws.send_str(text)

    async def recv(self, timeout: float = WAIT_S) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            msg = await self.ws.receive()
        if msg.type != aiohttp.WSMsgType.TEXT:
            # A CLOSE message carries the server's code; close_code may still
            # say 1006 if the TCP connection ended before our close reply.
            code = msg.data if msg.type == aiohttp.WSMsgType.CLOSE else self.ws.close_code
            return {"type": "_closed", "ws_type": msg.type.name, "code": code}
        frame: dict[str, Any] = msgspec.json.decode(msg.data)
        return frame

    async def recv_type(self, kind: str, timeout: float = WAIT_S) -> dict[str, Any]:
        """Skip frames until one of ``kind`` arrives (bounded)."""
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.recv(timeout)
                if frame["type"] == kind:
                    return frame
                if frame["type"] == "_closed":
                    raise AssertionError(f"closed while waiting for {kind}: {frame}")

    async def close(self) -> None:
        await self.ws.close()


@dataclass
class Pair:
    """Two users in a direct conversation, each with an open connection."""

    cid: str
    a_acc: Account
    b_acc: Account
    a: Raw
    b: Raw


async def direct_pair(session: aiohttp.ClientSession, http_url: str, ws_url: str) -> Pair:
    http = Http(session, http_url)
    a_acc, b_acc = await http.account(), await http.account()
    cid = await http.conversation(a_acc, "direct", [b_acc])
    a, _ = await Raw.connect(session, ws_url, a_acc.token)
    b, _ = await Raw.connect(session, ws_url, b_acc.token)
    return Pair(cid, a_acc, b_acc, a, b)


# How often poll() looks.
POLL_S = 0.05


async def poll(check: Callable[[], bool], timeout: float) -> None:
    """Wait (bounded) until ``check()`` holds, looking every ``POLL_S``."""
    for _ in range(int(timeout / POLL_S) + 1):
        if check():
            return
        await asyncio.sleep(POLL_S)
    raise AssertionError(f"condition not met within {timeout} s")
