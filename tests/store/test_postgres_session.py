"""The PostgreSQL pool skips asyncpg's reset round trip after a clean use, so
a use that fails must not hand on what its statement left behind: the
version gate's session lock (tidings_next_version) would stall every listing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.services_postgres import PostgresService, create_test_database
from tidings.store.postgres import PostgresStore

# Bounds the listing that would wait on a leaked gate lock (PostgreSQL's own
# statement timeout is longer).
GATE_WAIT_S = 3.0
GATE = "SELECT pg_advisory_lock_shared(29801, 1)"  # as tidings_next_version takes it
HELD = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"


@pytest.fixture
async def store(postgres_service: PostgresService) -> AsyncIterator[PostgresStore]:
    # One connection: the next use gets the very connection that failed.
    opened = PostgresStore(await create_test_database(), min_size=1, max_size=1)
    await opened.start()
    try:
        yield opened
    finally:
        await opened.close()


async def fail_holding_the_gate(store: PostgresStore) -> None:
    async with store._connection() as conn:
        await conn.execute(GATE)
        raise RuntimeError("interrupted")  # as if the statement was cut mid-way


async def test_a_use_that_fails_releases_the_gate(store: PostgresStore) -> None:
    with pytest.raises(RuntimeError, match="interrupted"):
        await fail_holding_the_gate(store)
    async with store._connection() as conn:
        assert await conn.fetchval(HELD) == 0
    async with asyncio.timeout(GATE_WAIT_S):
        await store.list_conversations("nobody", "d")  # takes the gate exclusively


async def test_a_cancelled_use_drops_its_connection(store: PostgresStore) -> None:
    pids: list[int] = []
    holding = asyncio.Event()

    async def use() -> None:
        async with store._connection() as conn:
            pids.append(await conn.fetchval("SELECT pg_backend_pid()"))
            await conn.execute(GATE)
            holding.set()
            await asyncio.sleep(60)  # cancelled here

    task = asyncio.create_task(use())
    async with asyncio.timeout(GATE_WAIT_S):
        await holding.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with store._connection() as conn:
        assert await conn.fetchval("SELECT pg_backend_pid()") != pids[0]
        assert await conn.fetchval(HELD) == 0


async def test_a_clean_use_keeps_its_connection(store: PostgresStore) -> None:
    async with store._connection() as conn:
        first = await conn.fetchval("SELECT pg_backend_pid()")
    async with store._connection() as conn:
        assert await conn.fetchval("SELECT pg_backend_pid()") == first
