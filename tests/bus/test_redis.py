"""RedisBus beyond the shared contract: prefix isolation and Redis outages (FM12).

Outage tests run a throwaway redis-server of their own (stopped and started
again on the same port); they need the redis-server binary, which the shared
Redis does not. Every wait is bounded; nothing asserts on elapsed time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from tests.bus.test_conformance import Inbox, started
from tests.services_redis import (
    RedisServer,
    delete_prefixed_keys,
    free_port,
    redis_url,
    throwaway_redis_server,
    unique_prefix,
)
from tidings.bus.redis import RedisBus
from tidings.core.errors import ErrorCode, TidingsError

# Generous bound for anything that must happen "soon" (reconnect backoff is
# capped at 2 s; the conformance suite waits 5 s for a delivery).
WAIT_S = 10.0

BusFactory = Callable[..., RedisBus]


async def wait_until(condition: Callable[[], bool]) -> None:
    # Polling: the conditions are plain flags on objects under test.
    async with asyncio.timeout(WAIT_S):
        while True:
            if condition():
                return
            await asyncio.sleep(0.01)


@pytest.fixture
def url() -> str:
    return redis_url()


server = pytest.fixture(name="server")(throwaway_redis_server)


@pytest.fixture
async def make_bus() -> AsyncIterator[BusFactory]:
    """``make_bus(url, prefix=..., on_reconnect=...)``; all closed after the
    test, and every key under the prefixes used is removed."""
    made: list[RedisBus] = []

    def make(bus_url: str, **kwargs: object) -> RedisBus:
        bus = RedisBus(bus_url, **kwargs)  # type: ignore[arg-type]
        made.append(bus)
        return bus

    yield make
    for bus in made:
        await bus.close()


async def test_prefixes_isolate_deployments(url: str, make_bus: BusFactory) -> None:
    p1, p2 = unique_prefix(), unique_prefix()
    pub1, sub1 = make_bus(url, prefix=p1), make_bus(url, prefix=p1)
    pub2, sub2 = make_bus(url, prefix=p2), make_bus(url, prefix=p2)
    await started(pub1)
    await started(pub2)
    inbox1, inbox2 = await started(sub1), await started(sub2)
    await sub1.subscribe("conv:1")
    await sub2.subscribe("conv:1")
    await pub1.publish("conv:1", b"for deployment 1")
    assert await inbox1.wait_for(1) == [("conv:1", b"for deployment 1")]
    # Crosstalk would have put the first message on sub2's socket before this.
    await pub2.publish("conv:1", b"for deployment 2")
    assert await inbox2.wait_for(1) == [("conv:1", b"for deployment 2")]
    assert inbox1.items == [("conv:1", b"for deployment 1")]
    # Pub/sub leaves no keys behind.
    assert await delete_prefixed_keys(url, p1) == 0
    assert await delete_prefixed_keys(url, p2) == 0


async def test_unreachable_redis_fails_fast_and_start_does_not_raise(
    make_bus: BusFactory,
) -> None:
    bus = make_bus(f"redis://127.0.0.1:{free_port()}/0", prefix=unique_prefix())
    await started(bus)  # a node may start before Redis; it is just not ready
    assert not bus.healthy
    with pytest.raises(TidingsError) as info:
        await bus.ping()
    assert info.value.code is ErrorCode.UNAVAILABLE
    with pytest.raises(TidingsError) as info:
        await bus.publish("conv:1", b"x")
    assert info.value.code is ErrorCode.UNAVAILABLE
    await bus.subscribe("conv:1")  # recorded, applied once Redis is there
    await bus.unsubscribe("conv:1")


async def test_redis_restart_reconnects_resubscribes_and_reports_the_gap(
    server: RedisServer, make_bus: BusFactory
) -> None:
    prefix = unique_prefix()
    gaps: list[str] = []
    publisher = make_bus(server.url, prefix=prefix)
    node = make_bus(server.url, prefix=prefix, on_reconnect=lambda: gaps.append("gap"))
    await started(publisher)
    inbox = await started(node)
    assert node.healthy
    assert gaps == []  # the first connection is not a reconnect
    await node.subscribe("conv:keep")
    await node.subscribe("conv:drop")
    await publisher.publish("conv:keep", b"before")
    assert await inbox.wait_for(1) == [("conv:keep", b"before")]

    server.stop()
    await wait_until(lambda: not node.healthy and not publisher.healthy)
    with pytest.raises(TidingsError) as info:
        await publisher.publish("conv:keep", b"during")
    assert info.value.code is ErrorCode.UNAVAILABLE
    with pytest.raises(TidingsError):
        await node.ping()
    # Changes during the outage do not raise and apply after it.
    await node.unsubscribe("conv:drop")
    await node.subscribe("conv:new")

    server.start()
    await wait_until(lambda: node.healthy and publisher.healthy and gaps == ["gap"])
    await node.ping()
    await publisher.publish("conv:drop", b"unsubscribed meanwhile")
    await publisher.publish("conv:keep", b"after")
    await publisher.publish("conv:new", b"subscribed meanwhile")
    got = await inbox.wait_for(3)
    assert got == [
        ("conv:keep", b"before"),
        ("conv:keep", b"after"),
        ("conv:new", b"subscribed meanwhile"),
    ]


async def test_subscribe_with_no_redis_then_redis_arrives(
    server: RedisServer, make_bus: BusFactory
) -> None:
    server.stop()
    prefix = unique_prefix()
    gaps: list[str] = []
    node = make_bus(server.url, prefix=prefix, on_reconnect=lambda: gaps.append("gap"))
    inbox = await started(node)
    await node.subscribe("user:1")  # wanted while nothing is connected
    server.start()
    # Topics were wanted while disconnected, so a gap is reported.
    await wait_until(lambda: node.healthy and gaps == ["gap"])
    publisher = make_bus(server.url, prefix=prefix)
    await started(publisher)
    await publisher.publish("user:1", b"hello")
    assert await inbox.wait_for(1) == [("user:1", b"hello")]


async def test_close_is_idempotent_and_stops_delivery(url: str, make_bus: BusFactory) -> None:
    prefix = unique_prefix()
    publisher, node = make_bus(url, prefix=prefix), make_bus(url, prefix=prefix)
    await started(publisher)
    inbox: Inbox = await started(node)
    await node.subscribe("t")
    await node.close()
    await node.close()
    assert not node.healthy
    await node.subscribe("t")  # a closed bus ignores this rather than reconnect
    with pytest.raises(TidingsError):
        await node.publish("t", b"x")
    await publisher.publish("t", b"nobody")
    assert inbox.items == []
