"""The server redelivers live messages a connection has not acknowledged."""

from __future__ import annotations

import aiohttp

from tests.conftest import ServerFactory
from tests.wire import Raw, direct_pair

REDELIVERY_MS = 300


async def test_unacknowledged_messages_are_redelivered_until_delivered(
    server_factory: ServerFactory,
) -> None:
    server = await server_factory(redelivery_ms=REDELIVERY_MS, heartbeat_ms=60_000)
    async with aiohttp.ClientSession() as session:
        pair = await direct_pair(session, server.http_url, server.ws_url)
        cid, a, b = pair.cid, pair.a, pair.b
        for n in (1, 2):
            await a.send(
                {
                    "type": "send",
                    "conversation_id": cid,
                    "client_msg_id": f"m{n}",
                    "content": {"text": str(n)},
                }
            )
            await a.recv_type("ack")
        first = [(await b.recv_type("msg"))["seq"] for _ in range(2)]
        assert first == [1, 2]
        # B acknowledges only 1: 2 comes again (and only 2), without B asking.
        await b.send({"type": "delivered", "conversation_id": cid, "seq": 1})
        again = await b.recv_type("msg")
        assert again["seq"] == 2
        assert again["client_msg_id"] == "m2"
        await b.send({"type": "delivered", "conversation_id": cid, "seq": 2})
        # Once acknowledged, nothing more comes: a ping round trip after more
        # than two redelivery timeouts sees no msg in between.
        await b.send({"type": "ping", "id": "p1"})
        assert (await b.recv())["type"] == "pong"
        await _quiet_for(b, 3 * REDELIVERY_MS / 1000)
        resent = server.node.metrics.registry.get_sample_value("tidings_redelivered_total")
        assert resent is not None
        assert resent >= 1
        await a.close()
        await b.close()


async def test_redelivery_gives_up_on_a_client_that_never_acknowledges(
    server_factory: ServerFactory,
) -> None:
    server = await server_factory(redelivery_ms=REDELIVERY_MS, heartbeat_ms=60_000)
    async with aiohttp.ClientSession() as session:
        pair = await direct_pair(session, server.http_url, server.ws_url)
        cid, a, b = pair.cid, pair.a, pair.b
        await a.send(
            {
                "type": "send",
                "conversation_id": cid,
                "client_msg_id": "once",
                "content": {"text": "x"},
            }
        )
        await a.recv_type("ack")
        copies = [await b.recv_type("msg") for _ in range(4)]  # the live one + 3 redeliveries
        assert {m["seq"] for m in copies} == {1}
        await _quiet_for(b, 3 * REDELIVERY_MS / 1000)
        await a.close()
        await b.close()


async def _quiet_for(conn: Raw, seconds: float) -> None:
    """Assert that no msg arrives for ``seconds`` (pings keep the link busy)."""

    try:
        frame = await conn.recv(timeout=seconds)
    except TimeoutError:
        return
    raise AssertionError(f"expected silence, got {frame}")
