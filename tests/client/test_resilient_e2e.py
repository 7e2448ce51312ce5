"""The resilient client against a real server: drops, server restarts, app
restarts and gaps, with every wait bounded."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from tests.conftest import RunningServer, make_settings, start_server
from tidings_client import (
    AppEvent,
    Message,
    MessageSent,
    ResilienceConfig,
    ResilientClient,
    TidingsHTTP,
)

T = TypeVar("T")

PASSWORD = "correct horse battery"
# Bound on every wait for something that must happen; generous for slow CI.
WAIT_S = 15.0
# Small, fast schedule so that reconnects happen within a test's patience.
FAST = ResilienceConfig(
    ack_timeout=1.0,
    max_attempts=20,
    backoff_base=0.05,
    backoff_cap=0.5,
    delivered_delay=0.1,
)


# The restarted server's heartbeat: the clients' pings (every half of it)
# find the dead link within about a second.
RESTART_HEARTBEAT_MS = 1_000
# How long the stopping server waits for open connections before dropping them.
RESTART_SHUTDOWN_S = 0.5


@dataclass
class Pair:
    alice_token: str
    bob_token: str
    alice_http: TidingsHTTP
    cid: str


async def make_pair(http_url: str) -> AsyncIterator[Pair]:
    async with TidingsHTTP(http_url) as alice, TidingsHTTP(http_url) as bob:
        await alice.register("alice", PASSWORD)
        bob_id = await bob.register("bob", PASSWORD)
        alice_login = await alice.login("alice", PASSWORD)
        bob_login = await bob.login("bob", PASSWORD)
        conversation = await alice.create_direct(bob_id)
        yield Pair(alice_login.token, bob_login.token, alice, conversation.conversation_id)


@pytest.fixture
async def pair(tidings_server: RunningServer) -> AsyncIterator[Pair]:
    async for p in make_pair(tidings_server.http_url):
        yield p


async def collect(client: ResilientClient, kind: type[T], count: int) -> list[T]:
    """The next ``count`` events of ``kind`` (others skipped), bounded by WAIT_S."""
    found: list[T] = []
    async with asyncio.timeout(WAIT_S):
        while len(found) < count:
            event: AppEvent = await client.next_event(timeout=WAIT_S)
            if isinstance(event, kind):
                found.append(event)
    return found


def texts(messages: list[Message]) -> list[str | None]:
    return [m.text for m in messages]


async def test_send_and_receive_in_order(tidings_server: RunningServer, pair: Pair) -> None:
    async with (
        ResilientClient(tidings_server.ws_url, pair.alice_token, config=FAST) as alice,
        ResilientClient(tidings_server.ws_url, pair.bob_token, config=FAST) as bob,
    ):
        cmids = [alice.send(pair.cid, f"m{i}") for i in range(20)]
        sent = await collect(alice, MessageSent, 20)
        assert {s.client_msg_id for s in sent} == set(cmids)
        received = await collect(bob, Message, 20)
        assert [m.seq for m in received] == list(range(1, 21))
        assert texts(received) == [f"m{i}" for i in range(20)]
        assert alice.pending() == []
        # Alice's own messages are in her ordered store too.
        assert [m.seq for m in alice.store.messages(pair.cid)] == list(range(1, 21))


async def start_on_port(data_dir: Path, port: int) -> RunningServer:
    """A server on a fixed port (a restart keeps the clients' URL).

    Stopping it is abrupt, like a crash: open WebSockets get no goodbye and
    the clients notice the dead link by themselves.
    """
    settings = make_settings(data_dir, heartbeat_ms=RESTART_HEARTBEAT_MS)
    return await start_server(settings, port, shutdown_timeout=RESTART_SHUTDOWN_S)


async def test_server_restart_mid_traffic_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    data_dir = tmp_path / "node"
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    server = await start_on_port(data_dir, port)
    try:
        async for p in make_pair(server.http_url):
            async with (
                ResilientClient(
                    server.ws_url, p.alice_token, db_path=str(tmp_path / "a.db"), config=FAST
                ) as alice,
                ResilientClient(
                    server.ws_url, p.bob_token, db_path=str(tmp_path / "b.db"), config=FAST
                ) as bob,
            ):
                await alice.wait_online(WAIT_S)
                await bob.wait_online(WAIT_S)
                total = 60
                for i in range(total // 2):
                    alice.send(p.cid, f"m{i}")
                await collect(alice, MessageSent, 5)
                # The server goes away mid-traffic and comes back on the same port.
                await server.stop()
                for i in range(total // 2, total):
                    alice.send(p.cid, f"m{i}")  # queued in the outbox meanwhile
                server = await start_on_port(data_dir, port)
                await collect(alice, MessageSent, total - 5)
                assert alice.pending() == []
                received = await collect(bob, Message, total)
                assert [m.seq for m in received] == list(range(1, total + 1))
                assert texts(received) == [f"m{i}" for i in range(total)]  # exactly once, in order
                async with TidingsHTTP(server.http_url, token=p.alice_token) as http:
                    history = await http.history(p.cid, limit=1000)
                assert [m.text for m in history] == [f"m{i}" for i in range(total)]
    finally:
        await server.stop()


async def test_dropped_connection_reconnects_and_resends(
    tidings_server: RunningServer, pair: Pair
) -> None:
    async with (
        ResilientClient(tidings_server.ws_url, pair.alice_token, config=FAST) as alice,
        ResilientClient(tidings_server.ws_url, pair.bob_token, config=FAST) as bob,
    ):
        await alice.wait_online(WAIT_S)
        for round_ in range(3):
            for i in range(10):
                alice.send(pair.cid, f"r{round_}-{i}")
            conn = alice.connection
            assert conn is not None
            await conn.close()  # the link drops with sends in flight
            await alice.wait_online(WAIT_S)
        await collect(alice, MessageSent, 30)
        received = await collect(bob, Message, 30)
        assert [m.seq for m in received] == list(range(1, 31))
        assert texts(received) == [f"r{r}-{i}" for r in range(3) for i in range(10)]


async def test_restarted_client_flushes_its_outbox(
    tidings_server: RunningServer, pair: Pair, tmp_path: Path
) -> None:
    db = str(tmp_path / "alice.db")
    # The first process never reaches the server (nothing listens on port 9
    # of loopback), then dies with its sends in the outbox.
    offline = ResilientClient("ws://127.0.0.1:9/v1/ws", pair.alice_token, db_path=db, config=FAST)
    await offline.start()
    cmids = [offline.send(pair.cid, f"queued {i}") for i in range(5)]
    await offline.close()

    async with (
        ResilientClient(tidings_server.ws_url, pair.alice_token, db_path=db, config=FAST) as alice,
        ResilientClient(tidings_server.ws_url, pair.bob_token, config=FAST) as bob,
    ):
        sent = await collect(alice, MessageSent, 5)
        assert [s.client_msg_id for s in sent] == cmids  # same ids, same order
        received = await collect(bob, Message, 5)
        assert texts(received) == [f"queued {i}" for i in range(5)]


async def test_gap_is_filled_before_later_messages_surface(
    tidings_server: RunningServer, pair: Pair, tmp_path: Path
) -> None:
    db = str(tmp_path / "bob.db")
    async with ResilientClient(tidings_server.ws_url, pair.bob_token, db_path=db, config=FAST) as b:
        await pair.alice_http.post_message(pair.cid, str(uuid.uuid4()), "m1")
        assert texts(await collect(b, Message, 1)) == ["m1"]
    # Bob is away while Alice writes; then he comes back and she keeps writing.
    for i in range(2, 7):
        await pair.alice_http.post_message(pair.cid, str(uuid.uuid4()), f"m{i}")
    async with ResilientClient(tidings_server.ws_url, pair.bob_token, db_path=db, config=FAST) as b:
        for i in range(7, 10):
            await pair.alice_http.post_message(pair.cid, str(uuid.uuid4()), f"m{i}")
        received = await collect(b, Message, 8)
        assert [m.seq for m in received] == list(range(2, 10))  # no hole, no repeat
        assert texts(received) == [f"m{i}" for i in range(2, 10)]
        assert b.cursors[pair.cid] == 9
