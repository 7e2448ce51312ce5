"""How many of a connection's sends the server answers at once, and the
bounds that keep a flood from holding unbounded memory (gateway/session.py).

The SQLite writer is held still by another process's write lock (as a backup
would hold it), so that sends stay in flight for as long as the test looks.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp
import pytest

from tests.conftest import RunningServer, ServerFactory
from tests.wire import WAIT_S, Http, Raw, poll
from tidings.gateway import session
from tidings.store.sqlite import SqliteStore

# Long enough that the stalled writer never gives up while the test looks;
# a bound, not a duration the test waits.
STALL_TIMEOUT_MS = 120_000
# How long the test watches a bound hold: a broken bound shows within
# milliseconds (the frames are already in the server's socket buffer).
WATCH_S = 0.3


@contextmanager
def writer_stalled(server: RunningServer) -> Iterator[None]:
    """Hold the database's write lock from outside for the block's duration."""
    store = server.node.store
    assert isinstance(store, SqliteStore)
    outsider = sqlite3.connect(store.path, isolation_level=None, timeout=WAIT_S)
    try:
        outsider.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            outsider.execute("COMMIT")
    finally:
        outsider.close()


async def _burst(conn: Raw, cid: str, name: str, count: int) -> None:
    for n in range(count):
        await conn.send(
            {
                "type": "send",
                "conversation_id": cid,
                "client_msg_id": f"{name}{n}",
                "content": {"text": f"{name} {n}"},
            }
        )


async def _acks(conn: Raw, count: int) -> list[dict[str, Any]]:
    return [await conn.recv_type("ack") for _ in range(count)]


async def _pair(session_: aiohttp.ClientSession, server: RunningServer) -> tuple[Raw, Raw, str]:
    http = Http(session_, server.http_url)
    a_acc, b_acc = await http.account(), await http.account()
    cid = await http.conversation(a_acc, "direct", [b_acc])
    a, _ = await Raw.connect(session_, server.ws_url, a_acc.token)
    b, _ = await Raw.connect(session_, server.ws_url, b_acc.token)
    return a, b, cid


async def test_a_connection_has_at_most_frames_in_flight_answered_at_once(
    server_factory: ServerFactory,
) -> None:
    server = await server_factory(frames_in_flight=4, sqlite_busy_timeout_ms=STALL_TIMEOUT_MS)
    gauge = server.node.metrics.frames_in_flight
    async with aiohttp.ClientSession() as http_session:
        a, _, cid = await _pair(http_session, server)
        with writer_stalled(server):
            await _burst(a, cid, "a", 20)
            await poll(lambda: gauge.value == 4, WAIT_S)
            await asyncio.sleep(WATCH_S)
            assert gauge.value == 4  # the other 16 wait unread
        acks = await _acks(a, 20)
        assert [ack["seq"] for ack in acks] == list(range(1, 21))
        await poll(lambda: gauge.value == 0, WAIT_S)


async def test_past_the_node_limit_each_connection_waits_for_its_own(
    server_factory: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(session, "NODE_IN_FLIGHT", 5)
    server = await server_factory(sqlite_busy_timeout_ms=STALL_TIMEOUT_MS)
    gauge = server.node.metrics.frames_in_flight
    async with aiohttp.ClientSession() as http_session:
        a, b, cid = await _pair(http_session, server)
        with writer_stalled(server):
            await _burst(a, cid, "a", 20)
            # A's sixth send takes the node past 5: A stops reading there.
            await poll(lambda: gauge.value == 6, WAIT_S)
            await _burst(b, cid, "b", 20)
            # B still gets one in flight, and no more.
            await poll(lambda: gauge.value == 7, WAIT_S)
            await asyncio.sleep(WATCH_S)
            assert gauge.value == 7
        a_acks, b_acks = await asyncio.gather(_acks(a, 20), _acks(b, 20))
        seqs = sorted(ack["seq"] for ack in (*a_acks, *b_acks))
        assert seqs == list(range(1, 41))
        assert [ack["client_msg_id"] for ack in a_acks] == [f"a{n}" for n in range(20)]
        await poll(lambda: gauge.value == 0, WAIT_S)
