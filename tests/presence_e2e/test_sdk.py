"""The SDK side of issue 5: TidingsClient's typing, presence and receipt
calls and events, end to end over real sockets."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

import aiohttp

from tests.conftest import ServerFactory
from tests.presence_e2e.support import FAST, GRACE_MS, TYPING_TTL_MS
from tests.wire import WAIT_S, Http
from tidings_client import Message, Presence, Receipt, TidingsClient, Typing
from tidings_client.connection import ClientEvent
from tidings_client.errors import RequestTimeoutError

E = TypeVar("E", Message, Presence, Receipt, Typing)


async def next_of(
    client: TidingsClient,
    kind: type[E],
    where: Callable[[E], bool] = lambda _: True,
    timeout: float = WAIT_S,
) -> E:
    """The next event of ``kind`` matching ``where`` (others are skipped); bounded."""
    async with asyncio.timeout(timeout):
        while True:
            event: ClientEvent = await client.next_event(timeout=timeout)
            if isinstance(event, kind) and where(event):
                return event


async def test_sdk_typing_presence_and_receipts_end_to_end(
    server_factory: ServerFactory, session: aiohttp.ClientSession
) -> None:
    server = await server_factory(**FAST)
    http = Http(session, server.http_url)
    a = await http.account()
    b = await http.account()
    cid = await http.conversation(a, "direct", [b])
    alice = await TidingsClient.connect(server.ws_url, a.token)
    bob = await TidingsClient.connect(server.ws_url, b.token)
    try:
        assert alice.welcome.limits.typing_ttl_ms == TYPING_TTL_MS

        await bob.subscribe_presence([a.user_id])
        online = await next_of(bob, Presence, lambda p: p.user_id == a.user_id)
        assert online.status == "online"
        assert (online.last_seen or 0) > 0

        await alice.typing(cid, "start")
        typing = await next_of(bob, Typing)
        assert (typing.conversation_id, typing.user_id, typing.state) == (cid, a.user_id, "start")
        assert 0 < typing.expires_ms <= TYPING_TTL_MS
        await alice.typing(cid, "stop")
        stopped = await next_of(bob, Typing)
        assert (stopped.user_id, stopped.state) == (a.user_id, "stop")

        await alice.set_presence("away")
        away = await next_of(bob, Presence, lambda p: p.user_id == a.user_id)
        assert away.status == "away"

        ack = await bob.send(cid, "hello")
        got = await next_of(alice, Message, lambda m: m.seq == ack.seq)
        await alice.delivered(cid, got.seq)
        await alice.read(cid, got.seq)
        receipt = await next_of(bob, Receipt, lambda r: r.read_seq == ack.seq)
        assert (receipt.conversation_id, receipt.user_id) == (cid, a.user_id)
        assert receipt.delivered_seq == ack.seq

        await alice.close()
        offline = await next_of(
            bob, Presence, lambda p: p.user_id == a.user_id, timeout=GRACE_MS / 1000 + WAIT_S
        )
        assert offline.status == "offline"
        assert (offline.last_seen or 0) > 0
    finally:
        await alice.close()
        await bob.close()


async def test_sdk_refreshes_typing_while_the_user_types(
    server_factory: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """One ``start_typing`` call, then nothing from the app: the SDK's own
    refresh timer keeps the indicator alive past the TTL until ``stop``."""
    server = await server_factory(**FAST)
    http = Http(session, server.http_url)
    a = await http.account()
    b = await http.account()
    cid = await http.conversation(a, "direct", [b])
    alice = await TidingsClient.connect(server.ws_url, a.token)
    bob = await TidingsClient.connect(server.ws_url, b.token)
    try:
        await alice.start_typing(cid)
        await next_of(bob, Typing)
        # Past 2 TTLs the indicator must have been refreshed at least once.
        try:
            refreshed = await next_of(
                bob, Typing, lambda t: t.state == "start", timeout=2 * TYPING_TTL_MS / 1000
            )
        except (RequestTimeoutError, TimeoutError):
            refreshed = None
        assert refreshed is not None, "no refresh of typing start within 2 TTLs"
    finally:
        await alice.close()
        await bob.close()
