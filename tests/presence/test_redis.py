"""RedisPresence beyond the shared contract: layout, memory, and outages.

Outage tests run a throwaway redis-server of their own (stopped and started
again on the same port), or a socket that accepts and never answers; they
need the redis-server binary, which the shared Redis does not. Every wait is
bounded. The only asserts on elapsed time are loose upper bounds that catch
an unbounded wait (a retry loop, a missing timeout), not a slow machine.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis.asyncio as aioredis

from tests.presence.measure_memory import measure
from tests.services_redis import (
    RedisServer,
    delete_prefixed_keys,
    free_port,
    redis_url,
    throwaway_redis_server,
    unique_prefix,
)
from tidings.core.errors import ErrorCode, TidingsError
from tidings.core.ports.presence import LAST_SEEN_TTL_S, Presence
from tidings.presence.redis import OP_TIMEOUT_S, RedisPresence

# Anything that must happen "soon" after Redis is back (one DOWN_RETRY_S
# window plus a reconnect), with room for a loaded CI box.
WAIT_S = 10.0
# A failing call must return within this: several times OP_TIMEOUT_S, far
# below what an unbounded wait or redis-py's default retries (3, with backoff
# up to 10 s) would take. A slow machine adds milliseconds, not seconds.
FAIL_FAST_BOUND_S = 6 * OP_TIMEOUT_S
# Generous ceiling on Redis memory per online user with two sessions
# (measured 232 by MEMORY USAGE on Redis 7.0; see measure_memory.py). It
# catches a layout regression, e.g. a hash that lost its compact encoding.
MAX_BYTES_PER_ONLINE_USER = 400

StoreFactory = Callable[..., RedisPresence]


@pytest.fixture
def url() -> str:
    return redis_url()


server = pytest.fixture(name="server")(throwaway_redis_server)


@pytest.fixture
async def make_store() -> AsyncIterator[StoreFactory]:
    """``make_store(url, prefix=...)``: started stores, closed after the test,
    and every key under their prefixes removed."""
    made: list[tuple[str, RedisPresence]] = []

    def make(store_url: str, *, prefix: str | None = None) -> RedisPresence:
        store = RedisPresence(store_url, prefix=prefix or unique_prefix())
        made.append((store_url, store))
        return store

    yield make
    for store_url, store in made:
        await store.close()
        if store_url == redis_url():
            await delete_prefixed_keys(store_url, store.prefix)


async def fails_fast(call: Callable[[], Awaitable[object]]) -> TidingsError:
    started = time.monotonic()
    with pytest.raises(TidingsError) as info:
        await call()
    assert time.monotonic() - started < FAIL_FAST_BOUND_S
    assert info.value.code is ErrorCode.UNAVAILABLE
    assert info.value.retryable
    assert info.value.retry_after_ms is not None
    return info.value


def every_operation(store: RedisPresence) -> list[Callable[[], Awaitable[object]]]:
    return [
        lambda: store.session_alive("u_a", "s_1", 30),
        lambda: store.sessions_alive([("u_a", "s_1"), ("u_b", "s_2")], 30),
        lambda: store.session_gone("u_a", "s_1", 5),
        lambda: store.set_status("u_a", "away"),
        lambda: store.set_status("u_a", "online"),
        lambda: store.get(["u_a"]),
        lambda: store.set_typing("c_1", "u_a", 5),
        lambda: store.clear_typing("c_1", "u_a"),
        lambda: store.clear_typing_for("u_a", ["c_1"]),
        lambda: store.typing_in(["c_1"]),
    ]


async def eventually_works(store: RedisPresence) -> None:
    async with asyncio.timeout(WAIT_S):
        while True:
            try:
                await store.session_alive("u_a", "s_1", 30)
                return
            except TidingsError:
                await asyncio.sleep(0.05)


# -- layout and memory -------------------------------------------------------


async def test_layout_one_hash_per_user_one_zset_per_conversation(
    url: str, make_store: StoreFactory
) -> None:
    store = make_store(url)
    p = store.prefix
    await store.session_alive("u_a", "s_1", 30)
    await store.session_alive("u_a", "s_2", 30)
    await store.set_status("u_a", "away")
    await store.set_typing("c_1", "u_a", 5)
    client = aioredis.Redis.from_url(url, protocol=2)
    try:
        keys = {bytes(k).decode() async for k in client.scan_iter(match=f"{p}*")}
        assert keys == {f"{p}pu:u_a", f"{p}pt:c_1"}
        fields = await client.hgetall(f"{p}pu:u_a")
        assert set(fields) == {b"s:s_1", b"s:s_2", b"st", b"ls"}
        assert await client.object("ENCODING", f"{p}pu:u_a") == b"listpack"
        # The user's key lives for last_seen's sake; the typing key only as
        # long as its last typist.
        assert await client.pttl(f"{p}pu:u_a") > (LAST_SEEN_TTL_S - 60) * 1000
        assert 0 < await client.pttl(f"{p}pt:c_1") <= 5000

        await store.clear_typing_for("u_a", ["c_1"])
        assert await client.exists(f"{p}pt:c_1") == 0  # nothing left behind
    finally:
        await client.aclose()


async def test_prefixes_isolate_deployments(url: str, make_store: StoreFactory) -> None:
    one, two = make_store(url), make_store(url)
    await one.session_alive("u_a", "s_1", 30)
    await one.set_typing("c_1", "u_a", 30)
    assert (await two.get(["u_a"]))["u_a"] == Presence("offline", 0)
    assert await two.typing_in(["c_1"]) == []


async def test_memory_per_online_user(url: str) -> None:
    prefix = unique_prefix()
    try:
        m = await measure(url, prefix, users=10_000, sessions=2)
    finally:
        await delete_prefixed_keys(url, prefix)
    assert m.user_keys == 10_000  # one key per user, whatever the sessions
    assert m.encoding == "listpack"
    assert m.memory_usage_per_user < MAX_BYTES_PER_ONLINE_USER, m


# -- outages -----------------------------------------------------------------


async def test_unreachable_redis_fails_fast_and_start_does_not_raise(
    make_store: StoreFactory,
) -> None:
    store = make_store(f"redis://127.0.0.1:{free_port()}/0")
    await store.start()  # a node may start before its Redis
    await fails_fast(store.ping)
    for op in every_operation(store):
        await fails_fast(op)


async def test_redis_that_never_answers_times_out(make_store: StoreFactory) -> None:
    """A partition without RST (or a hung Redis): bounded by timeouts, not
    by the kernel's TCP retries."""
    held: list[asyncio.StreamWriter] = []

    async def accept_and_ignore(_r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    silent = await asyncio.start_server(accept_and_ignore, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    try:
        store = make_store(f"redis://127.0.0.1:{port}/0")
        await fails_fast(lambda: store.get(["u_a"]))
        # Inside the retry window the next calls do not wait again.
        started = time.monotonic()
        await fails_fast(lambda: store.set_typing("c_1", "u_a", 5))
        assert time.monotonic() - started < OP_TIMEOUT_S
        await fails_fast(store.ping)
    finally:
        for writer in held:
            writer.close()
        silent.close()
        await silent.wait_closed()


async def test_redis_restart_fails_fast_then_recovers(
    server: RedisServer, make_store: StoreFactory
) -> None:
    store = make_store(server.url)
    await store.start()
    await store.session_alive("u_a", "s_1", 30)
    await store.set_typing("c_1", "u_a", 30)
    assert (await store.get(["u_a"]))["u_a"].status == "online"

    server.stop()
    await fails_fast(store.ping)
    for op in every_operation(store):
        await fails_fast(op)

    server.start()  # a fresh, empty Redis: no data, no loaded scripts
    await eventually_works(store)  # within about DOWN_RETRY_S
    await store.ping()
    assert (await store.get(["u_a"]))["u_a"].status == "online"
    await store.set_typing("c_1", "u_b", 30)
    assert [t.user_id for t in await store.typing_in(["c_1"])] == ["u_b"]


async def test_ping_success_ends_the_retry_window(
    server: RedisServer, make_store: StoreFactory
) -> None:
    store = make_store(server.url)
    server.stop()
    await fails_fast(lambda: store.get(["u_a"]))
    server.start()  # ready within ~50 ms, well inside DOWN_RETRY_S
    await store.ping()  # a readiness probe sees the truth at once ...
    await store.session_alive("u_a", "s_1", 30)  # ... and re-enables calls


async def test_scripts_are_reloaded_after_a_flush(
    server: RedisServer, make_store: StoreFactory
) -> None:
    store = make_store(server.url)
    await store.session_alive("u_a", "s_1", 30)
    client = aioredis.Redis.from_url(server.url, protocol=2)
    try:
        await client.script_flush()
    finally:
        await client.aclose()
    await store.sessions_alive([("u_a", "s_2"), ("u_b", "s_3")], 30)
    await store.session_gone("u_a", "s_1", 0)
    await store.set_typing("c_1", "u_a", 30)
    got = await store.get(["u_a", "u_b"])
    assert {u: p.status for u, p in got.items()} == {"u_a": "online", "u_b": "online"}


async def test_closed_store_refuses_and_close_is_idempotent(
    url: str, make_store: StoreFactory
) -> None:
    store = make_store(url)
    await store.session_alive("u_a", "s_1", 30)
    await store.close()
    await store.close()
    await fails_fast(lambda: store.get(["u_a"]))
    await fails_fast(store.ping)
    with pytest.raises(RuntimeError):
        await store.start()
