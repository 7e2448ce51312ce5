"""The bus backends under test: each factory builds N nodes on one broker.

A later Redis backend adds one factory here and passes the same suite.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from tidings.bus.memory import MemoryBus, MemoryHub
from tidings.core.ports.bus import Bus

NodesFactory = Callable[[int], Awaitable[list[Bus]]]


def _memory_nodes() -> Callable[[int], Awaitable[list[Bus]]]:
    hub = MemoryHub()

    async def make(count: int) -> list[Bus]:
        return [MemoryBus(hub) for _ in range(count)]

    return make


def _redis_nodes() -> Callable[[int], Awaitable[list[Bus]]]:
    # Imported here so that the memory run needs neither redis-py nor a server.
    from tests.services_redis import redis_url, unique_prefix
    from tidings.bus.redis import RedisBus

    url = redis_url()  # skips, or fails in CI, when there is no Redis
    prefix = unique_prefix()  # one run, one prefix: no crosstalk between runs

    async def make(count: int) -> list[Bus]:
        return [RedisBus(url, prefix=prefix) for _ in range(count)]

    return make


FACTORIES: dict[str, Callable[[], Callable[[int], Awaitable[list[Bus]]]]] = {
    "memory": _memory_nodes,
    "redis": _redis_nodes,
}


@pytest.fixture(params=sorted(FACTORIES))
async def bus_nodes(request: pytest.FixtureRequest) -> AsyncIterator[NodesFactory]:
    """``await bus_nodes(n)``: n unstarted buses (nodes) sharing one broker."""
    made: list[Bus] = []
    factory = FACTORIES[request.param]()

    async def make(count: int) -> list[Bus]:
        buses = await factory(count)
        made.extend(buses)
        return buses

    yield make
    for bus in made:
        await bus.close()
