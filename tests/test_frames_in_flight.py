"""How many of a connection's sends the server answers at once, and the
bounds that keep a flood from holding unbounded memory (gateway/session.py).

The SQLite writer is held still by another process's write lock (as a backup
would hold it), so that sends stay in flight for as long as the test looks.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractContextManager, asynccontextmanager
from typing import Any

import aiohttp
import pytest

from tests.conftest import RunningServer, ServerFactory
from tests.sqlite_lock import write_lock_held
from tests.wire import WAIT_S, Raw, direct_pair, poll
from tidings.gateway import session
from tidings.observability.metrics import LoopGauge
from tidings.store.sqlite import SqliteStore

# Long enough that the stalled writer never gives up while the test looks;
# a bound, not a duration the test waits.
STALL_TIMEOUT_MS = 120_000
# How long the test watches a bound hold: a broken bound shows within
# milliseconds (the frames are already in the server's socket buffer).
WATCH_S = 0.3


@asynccontextmanager
async def two_clients(server: RunningServer) -> AsyncIterator[tuple[Raw, Raw, str]]:
    """Two connected users of one direct conversation: (a, b, conversation_id)."""
    async with aiohttp.ClientSession() as http_session:
        pair = await direct_pair(http_session, server.http_url, server.ws_url)
        yield pair.a, pair.b, pair.cid


async def stallable(factory: ServerFactory, **overrides: Any) -> tuple[RunningServer, LoopGauge]:
    """A server whose writer :func:`stall` can hold still, and its gauge of frames in flight."""
    server = await factory(sqlite_busy_timeout_ms=STALL_TIMEOUT_MS, **overrides)
    return server, server.node.metrics.frames_in_flight


def stall(server: RunningServer) -> AbstractContextManager[object]:
    """Hold the server's SQLite write lock from outside for the block."""
    store = server.node.store
    assert isinstance(store, SqliteStore)
    return write_lock_held(store.path)


async def _acks(conn: Raw, count: int) -> list[dict[str, Any]]:
    return [await conn.recv_type("ack") for _ in range(count)]


async def test_a_connection_has_at_most_frames_in_flight_answered_at_once(
    server_factory: ServerFactory,
) -> None:
    server, gauge = await stallable(server_factory, frames_in_flight=4)
    async with two_clients(server) as (a, _, cid):
        with stall(server):
            await a.send_burst(cid, "a", 20)
            await poll(lambda: gauge.value == 4, WAIT_S)
            await asyncio.sleep(WATCH_S)
            assert gauge.value == 4  # the other 16 wait unread
        assert [ack["seq"] for ack in await _acks(a, 20)] == list(range(1, 21))
    await poll(lambda: gauge.value == 0, WAIT_S)


async def test_past_the_node_limit_each_connection_waits_for_its_own(
    server_factory: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(session, "NODE_IN_FLIGHT", 5)
    server, gauge = await stallable(server_factory)
    async with two_clients(server) as (a, b, cid):
        with stall(server):
            await a.send_burst(cid, "a", 20)
            # A's sixth send takes the node past 5: A stops reading there.
            await poll(lambda: gauge.value == 6, WAIT_S)
            await b.send_burst(cid, "b", 20)
            # B still gets one in flight, and no more.
            await poll(lambda: gauge.value == 7, WAIT_S)
            await asyncio.sleep(WATCH_S)
            assert gauge.value == 7
        a_acks, b_acks = await asyncio.gather(_acks(a, 20), _acks(b, 20))
        seqs = sorted(ack["seq"] for ack in (*a_acks, *b_acks))
        assert seqs == list(range(1, 41))
        assert [ack["client_msg_id"] for ack in a_acks] == [f"a-{n}" for n in range(20)]
    await poll(lambda: gauge.value == 0, WAIT_S)


async def test_sends_in_flight_when_the_client_leaves_are_still_stored(
    server_factory: ServerFactory,
) -> None:
    """A client that sends a burst and closes at once loses no acknowledged
    state: the sends already read are stored in order (their acks go nowhere),
    the rest were never read, and nothing stays in flight."""
    server, gauge = await stallable(server_factory)
    async with two_clients(server) as (a, b, cid):
        with stall(server):
            await a.send_burst(cid, "a", 10)
            await poll(lambda: gauge.value == 10, WAIT_S)
            await a.close()
        await poll(lambda: gauge.value == 0, WAIT_S)
        stored = await server.node.store.history(cid, 0, None, 100)
        assert [m.client_msg_id for m in stored] == [f"a-{n}" for n in range(10)]
        assert [m.seq for m in stored] == list(range(1, 11))
        # The other member is told of them live, and the server goes on.
        delivered = [(await b.recv_type("msg"))["seq"] for _ in range(10)]
        assert delivered == list(range(1, 11))
