"""The bus contract (tidings.core.ports.bus), run against every backend."""

from __future__ import annotations

import asyncio

from tests.bus.conftest import NodesFactory
from tidings.core.ports.bus import Bus

WAIT_S = 5.0


class Inbox:
    """Collects what one node's handler receives."""

    def __init__(self) -> None:
        self.items: list[tuple[str, bytes]] = []
        self._changed = asyncio.Event()

    def __call__(self, topic: str, payload: bytes) -> None:
        self.items.append((topic, payload))
        self._changed.set()

    async def wait_for(self, count: int) -> list[tuple[str, bytes]]:
        async with asyncio.timeout(WAIT_S):
            while len(self.items) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.items


async def started(bus: Bus) -> Inbox:
    inbox = Inbox()
    await bus.start(inbox)
    return inbox


async def test_publish_reaches_subscribers_on_every_node(bus_nodes: NodesFactory) -> None:
    a, b, c = await bus_nodes(3)
    inbox_a, inbox_b, inbox_c = await started(a), await started(b), await started(c)
    await a.subscribe("conv:1")
    await b.subscribe("conv:1")
    await c.subscribe("conv:2")
    await c.publish("conv:1", b"hello")
    assert await inbox_a.wait_for(1) == [("conv:1", b"hello")]
    assert await inbox_b.wait_for(1) == [("conv:1", b"hello")]
    # c listens to another topic only; a marker on its topic proves it is live.
    await a.publish("conv:2", b"marker")
    assert await inbox_c.wait_for(1) == [("conv:2", b"marker")]


async def test_order_is_kept_per_publisher(bus_nodes: NodesFactory) -> None:
    a, b = await bus_nodes(2)
    await started(a)
    inbox = await started(b)
    await b.subscribe("conv:x")
    payloads = [str(i).encode() for i in range(200)]
    for p in payloads:
        await a.publish("conv:x", p)
    got = await inbox.wait_for(len(payloads))
    assert [p for _, p in got] == payloads


async def test_unsubscribe_stops_delivery(bus_nodes: NodesFactory) -> None:
    a, b = await bus_nodes(2)
    await started(a)
    inbox = await started(b)
    await b.subscribe("t1")
    await b.subscribe("t2")
    await b.subscribe("t1")  # idempotent
    await a.publish("t1", b"one")
    await inbox.wait_for(1)
    await b.unsubscribe("t1")
    await b.unsubscribe("t1")  # idempotent
    await a.publish("t1", b"lost")
    await a.publish("t2", b"two")
    got = await inbox.wait_for(2)
    assert got == [("t1", b"one"), ("t2", b"two")]


async def test_payloads_are_opaque_bytes(bus_nodes: NodesFactory) -> None:
    a, b = await bus_nodes(2)
    await started(a)
    inbox = await started(b)
    await b.subscribe("bin")
    blob = bytes(range(256)) * 64
    await a.publish("bin", blob)
    assert await inbox.wait_for(1) == [("bin", blob)]


async def test_close_drops_subscriptions_and_ping_answers(bus_nodes: NodesFactory) -> None:
    a, b = await bus_nodes(2)
    await started(a)
    inbox = await started(b)
    await a.ping()
    await b.subscribe("gone")
    await b.close()
    await a.publish("gone", b"nobody")
    (c,) = await bus_nodes(1)
    inbox_c = await started(c)
    await c.subscribe("gone")
    await a.publish("gone", b"somebody")
    assert await inbox_c.wait_for(1) == [("gone", b"somebody")]
    assert inbox.items == []
