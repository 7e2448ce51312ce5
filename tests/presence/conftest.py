"""The presence backends under test, behind one harness.

Each factory gives a fresh, started store plus two ways to deal with time,
so that one suite runs unchanged on every backend:

- ``wait(seconds)`` lets that much time pass: the memory backend's injected
  clock jumps (no sleeping), Redis really sleeps (its clock is its own);
- ``now_ms()`` reads the backend's clock (Redis ``TIME``), for brackets
  around ``last_seen`` and typing expiries.

A later backend adds one factory here and passes the same suite.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest

from tidings.core.ports.presence import PresenceStore
from tidings.presence.memory import MemoryPresence

# Where the fake clock starts: a realistic epoch-ms value, so that nothing
# passes by accident because "now" is small.
FAKE_EPOCH_MS = 1_700_000_000_000


@dataclass
class Harness:
    backend: str
    store: PresenceStore
    wait: Callable[[float], Awaitable[None]]
    now_ms: Callable[[], Awaitable[int]]


class FakeClock:
    """The injectable clock of the memory backend, moved by hand."""

    def __init__(self, start_ms: int = FAKE_EPOCH_MS) -> None:
        self.ms = start_ms

    def __call__(self) -> int:
        return self.ms

    def advance(self, seconds: float) -> None:
        self.ms += round(seconds * 1000)


@dataclass
class _Made:
    harness: Harness
    cleanup: Callable[[], Awaitable[None]]


async def _memory() -> _Made:
    clock = FakeClock()
    store = MemoryPresence(clock)

    async def wait(seconds: float) -> None:
        clock.advance(seconds)

    async def now_ms() -> int:
        return clock()

    async def cleanup() -> None:
        await store.close()

    return _Made(Harness("memory", store, wait, now_ms), cleanup)


async def _redis() -> _Made:
    # Imported here so that the memory run needs neither redis-py nor a server.
    import redis.asyncio as aioredis

    from tests.services_redis import delete_prefixed_keys, redis_url, unique_prefix
    from tidings.presence.redis import RedisPresence

    url = redis_url()  # skips, or fails in CI, when there is no Redis
    prefix = unique_prefix()  # one test, one prefix: no crosstalk, clean removal
    store = RedisPresence(url, prefix=prefix)
    client = aioredis.Redis.from_url(url, protocol=2)

    async def now_ms() -> int:
        seconds, micros = await client.time()
        return seconds * 1000 + micros // 1000

    async def cleanup() -> None:
        await store.close()
        await client.aclose()
        await delete_prefixed_keys(url, prefix)

    return _Made(Harness("redis", store, asyncio.sleep, now_ms), cleanup)


FACTORIES: dict[str, Callable[[], Awaitable[_Made]]] = {
    "memory": _memory,
    "redis": _redis,
}


@pytest.fixture(params=sorted(FACTORIES))
async def presence(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    """A started store of each backend, with its clock helpers."""
    made = await FACTORIES[request.param]()
    await made.harness.store.start()
    try:
        yield made.harness
    finally:
        await made.cleanup()
