"""The seeds' crash scenario, over real sockets (issue 5).

B's connection dies without a close (the fault proxy resets it, or stalls it
so that the server does not even notice) while A types. When B comes back:

- while A still types, B sees A typing right after its welcome: a replay of
  the stored state, proven by holding A's refreshes while B reconnects (no
  live relay can arrive in that window);
- if A stopped (or let its ``start`` expire) more than the TTL ago, B sees no
  ``typing`` frame at all: never a stale replay.

Both presence backends (in-process and Redis) run every case.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from tests.conftest import RunningServer, ServerFactory
from tests.presence_e2e.support import (
    FAST,
    TYPING_TTL_MS,
    Typist,
    fence,
    keepalive,
    of_type,
    quiet,
)
from tests.wire import Account, Http, Raw
from tidings_tools.faults.proxy import FaultProxy


async def _setup(
    server_factory: ServerFactory,
    presence_settings: dict[str, Any],
    session: aiohttp.ClientSession,
) -> tuple[RunningServer, FaultProxy, Http, Account, Account, str]:
    server = await server_factory(**FAST, **presence_settings)
    proxy = FaultProxy("127.0.0.1", server.port)
    await proxy.start()
    http = Http(session, server.http_url)
    a = await http.account()
    b = await http.account()
    cid = await http.conversation(a, "direct", [b])
    return server, proxy, http, a, b, cid


def _crash(proxy: FaultProxy, how: str) -> None:
    """B's link dies without a WebSocket close: reset, or silently stalled."""
    link = proxy.links[-1]
    if how == "cut":
        link.cut()
    else:
        link.stall()


@pytest.mark.parametrize("crash", ["cut", "stall"])
async def test_reconnect_while_typing_sees_the_live_typing(
    server_factory: ServerFactory,
    presence_settings: dict[str, Any],
    session: aiohttp.ClientSession,
    crash: str,
) -> None:
    server, proxy, _, a, b, cid = await _setup(server_factory, presence_settings, session)
    a_conn, _ = await Raw.connect(session, server.ws_url, a.token)
    b_conn, _ = await Raw.connect(session, f"ws://127.0.0.1:{proxy.port}/v1/ws", b.token)
    typist = Typist(a_conn, cid)
    typist.typing = True
    typist.start()
    try:
        async with keepalive(b_conn):
            live = await b_conn.recv_type("typing")
        assert (live["user_id"], live["state"]) == (a.user_id, "start"), live

        _crash(proxy, crash)
        await asyncio.sleep(0.3)  # A keeps typing (refreshing) while B is gone
        assert typist.typing

        # Right after a refresh the server handled, hold A: nothing is relayed
        # while B reconnects, and A's entry has ~TTL left.
        await typist.hold()
        try:
            b2, _ = await Raw.connect(session, server.ws_url, b.token)
            replay = await b2.recv_type("typing", timeout=(TYPING_TTL_MS - 200) / 1000)
        finally:
            typist.resume()
        assert replay["conversation_id"] == cid
        assert replay["user_id"] == a.user_id
        assert replay["state"] == "start"
        assert 0 < replay["expires_ms"] <= TYPING_TTL_MS, replay

        # The reconnected session also gets the live refreshes and the stop.
        async with keepalive(b2):
            refreshed = await b2.recv_type("typing")
            assert refreshed["state"] == "start"
            assert refreshed["user_id"] == a.user_id
            await typist.stop_typing()
            stopped = await b2.recv_type("typing")
            while stopped["state"] == "start":  # a refresh that was in flight
                stopped = await b2.recv_type("typing")
        assert stopped == {
            "type": "typing",
            "conversation_id": cid,
            "user_id": a.user_id,
            "state": "stop",
            "expires_ms": stopped["expires_ms"],
        }
        await b2.close()
    finally:
        await typist.close()
        await proxy.close()
        await a_conn.close()


@pytest.mark.parametrize(("ending", "crash"), [("stop", "cut"), ("expire", "stall")])
async def test_reconnect_after_typing_ended_sees_nothing(
    server_factory: ServerFactory,
    presence_settings: dict[str, Any],
    session: aiohttp.ClientSession,
    ending: str,
    crash: str,
) -> None:
    server, proxy, _, a, b, cid = await _setup(server_factory, presence_settings, session)
    a_conn, _ = await Raw.connect(session, server.ws_url, a.token)
    b_conn, _ = await Raw.connect(session, f"ws://127.0.0.1:{proxy.port}/v1/ws", b.token)
    typist = Typist(a_conn, cid)
    typist.typing = True
    typist.start()
    try:
        async with keepalive(b_conn):
            live = await b_conn.recv_type("typing")
        assert (live["user_id"], live["state"]) == (a.user_id, "start"), live

        _crash(proxy, crash)  # B dies while A types
        await asyncio.sleep(0.2)
        if ending == "stop":
            await typist.stop_typing()
        else:
            # A stops refreshing (an app killed mid-word would not send stop).
            await typist.hold()
            typist.typing = False
            typist.resume()
        ended = asyncio.get_running_loop().time()
        # Well past the TTL since the last start the server handled.
        await asyncio.sleep(TYPING_TTL_MS / 1000 + 0.3)
        assert typist.last_start
        assert asyncio.get_running_loop().time() - ended > 0.8

        b2, _ = await Raw.connect(session, server.ws_url, b.token)
        after_welcome = await fence(b2)
        later = await quiet(b2, 0.4)
        stale = of_type(after_welcome + later, "typing")
        assert stale == [], f"a reconnecting client got a stale typing replay: {stale}"

        # Control: the same session does see A typing when A types again.
        typist.typing = True
        async with keepalive(b2):
            again = await b2.recv_type("typing")
        assert again["user_id"] == a.user_id
        assert again["state"] == "start"
        await b2.close()
    finally:
        await typist.close()
        await proxy.close()
        await a_conn.close()
