"""A node on a Redis bus whose presence stays in its own memory says so.

Such a node answers every probe, so without this nothing would show that
watchers on it see other nodes' users as offline: it logs a warning at start
and ``/readyz`` carries ``presence: local only: ...`` (still 200: chat works).
The same node with presence unset shares the bus's Redis and says ``ok``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import aiohttp
import pytest
import redis.asyncio as aioredis

from tests.conftest import ServerFactory
from tests.presence_e2e.support import eventually
from tests.wire import Http, Raw


@pytest.fixture
async def redis_bus() -> AsyncIterator[dict[str, str]]:
    """Settings putting a node on the test Redis, under a prefix of its own."""
    from tests.services_redis import delete_prefixed_keys, redis_url, unique_prefix

    url = redis_url()  # skips (or fails in CI) without a Redis
    prefix = unique_prefix()
    try:
        yield {"bus": url, "bus_prefix": prefix}
    finally:
        await delete_prefixed_keys(url, prefix)


async def test_memory_presence_on_a_redis_bus_is_reported_and_logged(
    server_factory: ServerFactory,
    redis_bus: dict[str, str],
    session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="tidings.app")
    server = await server_factory(presence="memory://", **redis_bus)
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.name == "tidings.app" and r.levelno == logging.WARNING
    ]
    assert len(warnings) == 1, warnings
    assert "other nodes look offline" in warnings[0], warnings

    status, body = await Http(session, server.http_url).call("GET", "/readyz")
    assert status == 200, body  # chat works: a balancer must not pull the node
    assert body["status"] == "ok", body
    assert set(body["checks"]) == {"store", "bus", "presence", "push"}, body
    assert body["checks"]["store"] == "ok", body
    assert body["checks"]["bus"] == "ok", body
    assert body["checks"]["presence"].startswith("local only: "), body
    assert "other nodes look offline" in body["checks"]["presence"], body


async def test_unset_presence_on_a_redis_bus_shares_it_and_says_ok(
    server_factory: ServerFactory,
    redis_bus: dict[str, str],
    session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="tidings.app")
    server = await server_factory(**redis_bus)
    assert not [r for r in caplog.records if r.name == "tidings.app"], caplog.records

    http = Http(session, server.http_url)
    status, body = await http.call("GET", "/readyz")
    assert (status, body) == (
        200,
        {"status": "ok", "checks": {"store": "ok", "bus": "ok", "presence": "ok", "push": "ok"}},
    )

    # A connection's session lands in the bus's Redis, under the bus prefix.
    user = await http.account()
    conn, _ = await Raw.connect(session, server.ws_url, user.token)
    key = f"{redis_bus['bus_prefix']}presence:pu:{user.user_id}"
    client = aioredis.Redis.from_url(redis_bus["bus"])
    try:

        async def stored() -> bool:
            return bool(await client.exists(key))

        await eventually(stored)
    finally:
        await client.aclose()
        await conn.close()
