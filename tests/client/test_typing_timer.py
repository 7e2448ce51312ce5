"""The SDK keeps a typing indicator alive with its own refresh timer."""

from __future__ import annotations

import asyncio

import aiohttp

from tests.conftest import ServerFactory
from tests.wire import Http
from tidings_client import TidingsClient
from tidings_client.frames import Typing

TTL_MS = 600
WAIT_S = 10.0


async def _next_typing(client: TidingsClient) -> Typing:
    async with asyncio.timeout(WAIT_S):
        while True:
            event = await client.next_event(WAIT_S)
            if isinstance(event, Typing):
                return event


async def test_start_typing_refreshes_until_stopped(server_factory: ServerFactory) -> None:
    server = await server_factory(typing_ttl_ms=TTL_MS)
    async with aiohttp.ClientSession() as session:
        http = Http(session, server.http_url)
        a_acc, b_acc = await http.account(), await http.account()
        cid = await http.conversation(a_acc, "direct", [b_acc])
    async with (
        await TidingsClient.connect(server.ws_url, a_acc.token) as alice,
        await TidingsClient.connect(server.ws_url, b_acc.token) as bob,
    ):
        assert alice.welcome.limits.typing_ttl_ms == TTL_MS
        await alice.start_typing(cid)
        # The first start, then refreshes before the TTL runs out, unprompted.
        seen = [await _next_typing(bob) for _ in range(3)]
        assert all((t.user_id, t.state) == (a_acc.user_id, "start") for t in seen)
        assert all(0 < t.expires_ms <= TTL_MS for t in seen)
        await alice.stop_typing(cid)
        stopped = await _next_typing(bob)
        while stopped.state == "start":  # a refresh may have been in flight
            stopped = await _next_typing(bob)
        assert stopped.state == "stop"
