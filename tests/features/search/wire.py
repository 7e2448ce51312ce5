"""Helpers of the search tests: a search call, and waiting (bounded) for the
index to show what the store holds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp

from tests.conftest import RunningServer
from tests.wire import Account, Http, Raw

FOUND_WITHIN_S = 1.0
"""How soon after its ack a message must be found (the issue's promise)."""
WAIT_S = 10.0
"""Longest wait for anything slower (a rebuild)."""


async def search(http: Http, who: Account, q: str, **params: Any) -> dict[str, Any]:
    """A search that must answer 200; its body."""
    status, body = await search_call(http, who, q, **params)
    assert status == 200, body
    answer: dict[str, Any] = body
    return answer


async def search_call(http: Http, who: Account, q: str, **params: Any) -> tuple[int, Any]:
    query = {"q": q, **{k: str(v) for k, v in params.items()}}
    return await http.call("GET", f"/v1/search?{urlencode(query)}", who.token)


def hits(body: dict[str, Any]) -> list[tuple[str, int]]:
    return [(r["conversation_id"], r["seq"]) for r in body["results"]]


async def until(
    http: Http,
    who: Account,
    q: str,
    check: Callable[[dict[str, Any]], bool],
    timeout: float = WAIT_S,
    **params: Any,
) -> dict[str, Any]:
    """Search until ``check(body)`` holds (bounded); the last body."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        body = await search(http, who, q, **params)
        if check(body):
            return body
        if loop.time() > deadline:
            raise AssertionError(f"search {q!r} never satisfied the check: {body}")
        await asyncio.sleep(0.02)


@dataclass(frozen=True)
class Chat:
    """Alice and Bob in a conversation (Alice connected), and Eve, outside it."""

    http: Http
    alice: Account
    bob: Account
    eve: Account
    cid: str
    ws: Raw


@asynccontextmanager
async def chat(server: RunningServer, kind: str = "direct") -> AsyncIterator[Chat]:
    async with aiohttp.ClientSession() as session:
        http = Http(session, server.http_url)
        alice, bob, eve = await http.account(), await http.account(), await http.account()
        cid = await http.conversation(alice, kind, [bob])
        ws, _ = await Raw.connect(session, server.ws_url, alice.token)
        try:
            yield Chat(http, alice, bob, eve, cid, ws)
        finally:
            await ws.close()
