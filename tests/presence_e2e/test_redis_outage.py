"""Stopping the Redis that holds presence while people chat (issue 5).

Chat never depends on presence: with the presence Redis down, messages still
flow (send -> ack -> msg) promptly, ``/readyz`` stays 200 and says presence is
degraded; once Redis is back, presence works again.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest

from tests.conftest import ServerFactory
from tests.presence_e2e.support import (
    POLL_MS,
    REFRESH_MS,
    TYPING_TTL_MS,
    eventually,
    wait_presence,
)
from tests.services_redis import (
    RedisServer,
    free_port,
    throwaway_redis_server,
    unique_prefix,
)
from tests.wire import Http, Raw
from tidings_tools.faults.proxy import FaultProxy

PRESENCE_TIMINGS: dict[str, Any] = {
    "presence_grace_ms": 500,
    "presence_poll_ms": POLL_MS,
    "presence_refresh_ms": REFRESH_MS,
    "typing_ttl_ms": TYPING_TTL_MS,
}
# A send during the outage may wait for one presence call that times out
# (typing handled before it on the same connection); chat must never wait
# for more than that.
MAX_ACK_S = 2.0


redis_server = pytest.fixture(name="redis_server")(throwaway_redis_server)


async def _readyz(http: Http) -> tuple[int, dict[str, Any]]:
    status, body = await http.call("GET", "/readyz")
    return status, dict(body)


async def _presence_is(http: Http, *, ok: bool) -> bool:
    status, body = await _readyz(http)
    assert status == 200, body  # presence never makes the node unready
    return (body["checks"]["presence"] == "ok") is ok


async def _chat(sender: Raw, receiver: Raw, cid: str, tag: str) -> float:
    """One message end to end; the ack's latency."""
    started = time.monotonic()
    await sender.send(
        {
            "type": "send",
            "conversation_id": cid,
            "client_msg_id": tag,
            "content": {"text": tag},
        }
    )
    ack = await sender.recv_type("ack")
    took = time.monotonic() - started
    msg = await receiver.recv_type("msg")
    assert ack["client_msg_id"] == tag
    assert msg["client_msg_id"] == tag
    assert msg["seq"] == ack["seq"]
    return took


async def test_chat_goes_on_while_presence_redis_is_down(
    server_factory: ServerFactory,
    redis_server: RedisServer,
    session: aiohttp.ClientSession,
) -> None:
    server = await server_factory(
        presence=redis_server.url, bus_prefix=unique_prefix(), **PRESENCE_TIMINGS
    )
    http = Http(session, server.http_url)
    a = await http.account()
    b = await http.account()
    d = await http.account()
    cid = await http.conversation(a, "direct", [b])
    a_conn, _ = await Raw.connect(session, server.ws_url, a.token)
    b_conn, _ = await Raw.connect(session, server.ws_url, b.token)
    d_conn, _ = await Raw.connect(session, server.ws_url, d.token)
    await b_conn.send({"type": "presence_subscribe", "user_ids": [a.user_id]})
    await wait_presence(b_conn, a.user_id, "online")
    status, body = await _readyz(http)
    assert status == 200, body
    assert body["checks"]["presence"] == "ok", body

    redis_server.stop()

    latencies = []
    for i in range(5):
        await a_conn.send({"type": "typing", "conversation_id": cid, "state": "start"})
        latencies.append(await _chat(a_conn, b_conn, cid, f"a-{i}"))
        latencies.append(await _chat(b_conn, a_conn, cid, f"b-{i}"))
    assert max(latencies) < MAX_ACK_S, latencies

    status, body = await _readyz(http)
    assert status == 200, body
    assert body["status"] == "ok", body
    assert body["checks"]["store"] == "ok", body
    assert body["checks"]["bus"] == "ok", body
    assert body["checks"]["presence"].startswith("degraded"), body

    redis_server.start()  # empty: the node's refresh writes its sessions again
    await eventually(lambda: _presence_is(http, ok=True))

    # Presence works again: a new subscription gets a state at once, and the
    # user's live session shows up as online.
    await b_conn.send({"type": "presence_subscribe", "user_ids": [d.user_id]})
    first, _ = await wait_presence(b_conn, d.user_id, "online")
    assert first["last_seen"] > 0
    assert await _chat(a_conn, b_conn, cid, "after") < MAX_ACK_S
    for conn in (a_conn, b_conn, d_conn):
        await conn.close()


async def test_subscribe_during_an_outage_gets_the_state_once_presence_is_back(
    server_factory: ServerFactory,
    redis_server: RedisServer,
    session: aiohttp.ClientSession,
) -> None:
    """A client that subscribed while presence was unreachable must learn the
    user's state once presence recovers, not only at that user's next change.

    The outage is a network one (the path to Redis closes and reopens on the
    same port), so Redis keeps its data and D's state does not change.
    """
    port = free_port()
    path = FaultProxy("127.0.0.1", redis_server.port, listen_port=port)
    await path.start()
    server = await server_factory(
        presence=f"redis://127.0.0.1:{port}/0", bus_prefix=unique_prefix(), **PRESENCE_TIMINGS
    )
    http = Http(session, server.http_url)
    b = await http.account()
    d = await http.account()
    b_conn, _ = await Raw.connect(session, server.ws_url, b.token)
    d_conn, _ = await Raw.connect(session, server.ws_url, d.token)
    await asyncio.sleep(2 * REFRESH_MS / 1000)  # D's session is in Redis
    try:
        await path.close()  # Redis unreachable (refused), its data intact
        await eventually(lambda: _presence_is(http, ok=False))
        await b_conn.send({"type": "presence_subscribe", "user_ids": [d.user_id]})
        await asyncio.sleep(0.3)
        path = FaultProxy("127.0.0.1", redis_server.port, listen_port=port)
        await path.start()
        await eventually(lambda: _presence_is(http, ok=True))

        # D has been connected (online) the whole time and does not change.
        state, _ = await wait_presence(b_conn, d.user_id, "online", timeout=3.0)
        assert state["last_seen"] > 0
    finally:
        await path.close()
    await b_conn.close()
    await d_conn.close()
