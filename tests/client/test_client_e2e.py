"""The SDK against a real Tidings server (``tidings_server``): HTTP and WebSocket
end to end, over loopback sockets, with SQLite underneath."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TypeVar

import pytest

from tests.conftest import RunningServer, ServerFactory
from tidings_client import (
    ClientEvent,
    ConnectionClosedError,
    Message,
    Receipt,
    RequestTimeoutError,
    TidingsClient,
    TidingsClientError,
    TidingsHTTP,
)

T = TypeVar("T")

PASSWORD = "correct horse battery"
# How long a test waits for an event that must come; generous for slow CI.
EVENT_TIMEOUT_S = 5.0
# How long a test watches for an event that must *not* come.
QUIET_WINDOW_S = 0.3


@dataclass
class Pair:
    """Two users sharing a direct conversation, each with a logged-in HTTP client."""

    alice: TidingsHTTP
    bob: TidingsHTTP
    alice_id: str
    bob_id: str
    alice_token: str
    bob_token: str
    cid: str


@pytest.fixture
async def pair(tidings_server: RunningServer) -> AsyncIterator[Pair]:
    async with (
        TidingsHTTP(tidings_server.http_url) as alice,
        TidingsHTTP(tidings_server.http_url) as bob,
    ):
        alice_id = await alice.register("alice", PASSWORD)
        bob_id = await bob.register("bob", PASSWORD)
        alice_login = await alice.login("alice", PASSWORD, device_name="laptop")
        bob_login = await bob.login("bob", PASSWORD)
        assert alice_login.user_id == alice_id
        assert bob_login.user_id == bob_id
        conversation = await alice.create_direct(bob_id)
        assert {m.user_id for m in conversation.members} == {alice_id, bob_id}
        yield Pair(
            alice,
            bob,
            alice_id,
            bob_id,
            alice_login.token,
            bob_login.token,
            conversation.conversation_id,
        )


async def next_of(client: TidingsClient, kind: type[T]) -> T:
    """The next event of ``kind``, skipping others (e.g. typing, presence)."""
    async with asyncio.timeout(EVENT_TIMEOUT_S):
        while True:
            event = await client.next_event(timeout=EVENT_TIMEOUT_S)
            if isinstance(event, kind):
                return event


async def drain(client: TidingsClient) -> list[ClientEvent]:
    """Every event that arrives within the quiet window."""
    events: list[ClientEvent] = []
    while True:
        try:
            events.append(await client.next_event(timeout=QUIET_WINDOW_S))
        except RequestTimeoutError:
            return events


async def test_send_receive_ack_and_receipts(tidings_server: RunningServer, pair: Pair) -> None:
    async with (
        await TidingsClient.connect(tidings_server.ws_url, pair.alice_token) as alice,
        await TidingsClient.connect(tidings_server.ws_url, pair.bob_token, network="wifi") as bob,
    ):
        assert alice.welcome.user_id == pair.alice_id
        assert bob.welcome.user_id == pair.bob_id
        assert alice.welcome.device_id != bob.welcome.device_id
        assert alice.welcome.heartbeat_ms > 0
        assert alice.welcome.epoch

        cmid = str(uuid.uuid4())
        ack = await alice.send(pair.cid, "hello bob", client_msg_id=cmid)
        assert ack.client_msg_id == cmid
        assert ack.conversation_id == pair.cid
        assert ack.seq == 1
        assert ack.message_id
        assert ack.ts > 0
        assert ack.duplicate is False

        message = await next_of(bob, Message)
        assert message.conversation_id == pair.cid
        assert message.seq == 1
        assert message.message_id == ack.message_id
        assert message.sender_id == pair.alice_id
        assert message.client_msg_id == cmid
        assert message.ts == ack.ts
        assert message.text == "hello bob"

        await bob.delivered(pair.cid, 1)
        receipt = await next_of(alice, Receipt)
        assert (receipt.conversation_id, receipt.user_id) == (pair.cid, pair.bob_id)
        assert receipt.delivered_seq == 1
        await bob.read(pair.cid, 1)
        while receipt.read_seq < 1:
            receipt = await next_of(alice, Receipt)
        assert receipt.read_seq == 1
        assert receipt.delivered_seq == 1

        # The sender's connection gets the ack, never a msg for its own message.
        assert not [e for e in await drain(alice) if isinstance(e, Message)]


async def test_resend_with_same_client_msg_id_is_duplicate(
    tidings_server: RunningServer, pair: Pair
) -> None:
    async with await TidingsClient.connect(tidings_server.ws_url, pair.alice_token) as alice:
        first = await alice.send(pair.cid, {"text": "once"}, client_msg_id="retry-me")
        again = await alice.send(pair.cid, {"text": "once"}, client_msg_id="retry-me")
        assert first.duplicate is False
        assert again.duplicate is True
        assert (again.seq, again.message_id) == (first.seq, first.message_id)
    history = await pair.bob.history(pair.cid)
    assert [m.client_msg_id for m in history] == ["retry-me"]


async def test_sync_returns_missed_messages_in_order_with_paging(
    tidings_server: RunningServer, pair: Pair
) -> None:
    total = 7
    async with await TidingsClient.connect(tidings_server.ws_url, pair.alice_token) as alice:
        acks = [await alice.send(pair.cid, f"m{i}") for i in range(1, total + 1)]
    assert [a.seq for a in acks] == list(range(1, total + 1))

    # Bob was offline: a page limit of 3 makes the server answer in 3 pages.
    async with await TidingsClient.connect(tidings_server.ws_url, pair.bob_token) as bob:
        result = await bob.sync(limit=3)
        assert result.pages >= 3
        pushed = [e for e in await drain(bob) if isinstance(e, Message)]
        assert pushed == [], "synced messages must not be repeated in events()"
        assert [(m.conversation_id, m.seq) for m in result.messages] == [
            (pair.cid, seq) for seq in range(1, total + 1)
        ]
        assert [m.text for m in result.messages] == [f"m{i}" for i in range(1, total + 1)]
        assert [m.message_id for m in result.messages] == [a.message_id for a in acks]
        [state] = [c for c in result.conversations if c.conversation_id == pair.cid]
        assert state.last_seq == total
        assert bob.cursors.cursor(pair.cid) == total

        await bob.delivered(pair.cid, total)
        # Nothing changed since the token: an empty answer.
        again = await bob.sync(since=result.token)
        assert again.messages == []

        # Explicit cursors: "I hold up to 4" gets 5..7 -- unless this client
        # already holds them, in which case they are deduplicated away.
        tail = await bob.sync(cursors={pair.cid: 4})
        assert tail.messages == []

    # A fresh client (no local state) with explicit cursors gets the tail.
    async with await TidingsClient.connect(tidings_server.ws_url, pair.bob_token) as bob2:
        tail = await bob2.sync(cursors={pair.cid: 4})
        assert [m.seq for m in tail.messages] == [5, 6, 7]


async def test_live_message_after_sync_is_an_event(
    tidings_server: RunningServer, pair: Pair
) -> None:
    async with (
        await TidingsClient.connect(tidings_server.ws_url, pair.alice_token) as alice,
        await TidingsClient.connect(tidings_server.ws_url, pair.bob_token) as bob,
    ):
        result = await bob.sync()
        assert result.messages == []
        ack = await alice.send(pair.cid, "live")
        message = await next_of(bob, Message)
        assert (message.seq, message.message_id) == (ack.seq, ack.message_id)


async def test_http_post_message_retry_is_duplicate(pair: Pair) -> None:
    first = await pair.alice.post_message(pair.cid, "http-1", "over http")
    again = await pair.alice.post_message(pair.cid, "http-1", "over http")
    assert first.duplicate is False
    assert again.duplicate is True
    assert (again.seq, again.message_id) == (first.seq, first.message_id)
    history = await pair.bob.history(pair.cid)
    assert [(m.seq, m.text, m.sender_id) for m in history] == [(1, "over http", pair.alice_id)]
    # History paging.
    await pair.alice.post_message(pair.cid, "http-2", "second")
    await pair.alice.post_message(pair.cid, "http-3", "third")
    assert [m.seq for m in await pair.bob.history(pair.cid, after_seq=1)] == [2, 3]
    assert [m.seq for m in await pair.bob.history(pair.cid, before_seq=3, limit=1)] in ([1], [2])
    conversations = await pair.bob.list_conversations()
    [mine] = [c for c in conversations if c.conversation_id == pair.cid]
    assert mine.last_seq == 3
    assert mine.unread == 3


async def test_http_accounts_and_errors(tidings_server: RunningServer, pair: Pair) -> None:
    with pytest.raises(TidingsClientError) as taken:
        await pair.alice.register("alice", PASSWORD)
    assert (taken.value.code, taken.value.status) == ("conflict", 409)
    async with TidingsHTTP(tidings_server.http_url) as anonymous:
        with pytest.raises(TidingsClientError) as bad:
            await anonymous.login("alice", "wrong password")
        assert (bad.value.code, bad.value.status) == ("unauthorized", 401)
        with pytest.raises(TidingsClientError) as no_token:
            await anonymous.list_conversations()
        assert no_token.value.code == "unauthorized"
    found = await pair.alice.find_user("bob")
    assert (found.user_id, found.username) == (pair.bob_id, "bob")
    assert (await pair.alice.get_user(pair.bob_id)).username == "bob"
    with pytest.raises(TidingsClientError) as missing:
        await pair.alice.find_user("nobody-here")
    assert missing.value.code == "not_found"
    # A direct conversation is unique per pair.
    assert (await pair.bob.create_direct(pair.alice_id)).conversation_id == pair.cid


async def test_group_membership_over_http(tidings_server: RunningServer, pair: Pair) -> None:
    carol_id = await pair.alice.register("carol", PASSWORD)
    group = await pair.alice.create_group("trio", [pair.bob_id])
    assert group.kind == "group"
    assert group.title == "trio"
    added = await pair.alice.add_members(group.conversation_id, [carol_id])
    assert added is None or added.kind == "member_added"
    with pytest.raises(TidingsClientError) as forbidden:
        await pair.bob.remove_member(group.conversation_id, carol_id)
    assert forbidden.value.code == "forbidden"
    removed = await pair.alice.remove_member(group.conversation_id, carol_id)
    assert removed is None or removed.kind == "member_removed"
    members = {
        m.user_id for m in (await pair.alice.get_conversation(group.conversation_id)).members
    }
    assert members == {pair.alice_id, pair.bob_id}


async def test_connect_with_bad_token_raises_unauthorized(tidings_server: RunningServer) -> None:
    with pytest.raises(TidingsClientError) as info:
        await TidingsClient.connect(tidings_server.ws_url, "not-a-token", timeout=EVENT_TIMEOUT_S)
    assert info.value.code == "unauthorized"
    assert not info.value.retryable


async def test_send_to_a_foreign_conversation_fails(
    tidings_server: RunningServer, pair: Pair
) -> None:
    eve_id = await pair.alice.register("eve", PASSWORD)
    async with TidingsHTTP(tidings_server.http_url) as eve_http:
        eve_login = await eve_http.login("eve", PASSWORD)
    assert eve_login.user_id == eve_id
    async with await TidingsClient.connect(tidings_server.ws_url, eve_login.token) as eve:
        with pytest.raises(TidingsClientError) as info:
            await eve.send(pair.cid, "let me in")
        assert info.value.code in ("not_member", "not_found")
        # The connection stays usable after a rejected frame.
        assert await eve.ping() >= 0


async def test_heartbeat_keeps_a_quiet_connection_open(
    server_factory: ServerFactory,
) -> None:
    server = await server_factory(heartbeat_ms=300)
    async with TidingsHTTP(server.http_url) as http:
        await http.register("quiet", PASSWORD)
        login = await http.login("quiet", PASSWORD)
    async with await TidingsClient.connect(server.ws_url, login.token) as client:
        assert client.welcome.heartbeat_ms == 300
        # Well past the server's 2 x heartbeat_ms silence limit.
        await asyncio.sleep(1.5)
        assert not client.closed
        assert await client.ping() >= 0
    async with await TidingsClient.connect(server.ws_url, login.token, heartbeat=False) as silent:
        # Without a heartbeat the server drops the silent connection, which ends events().
        async with asyncio.timeout(EVENT_TIMEOUT_S):
            async for _ in silent.events():
                pass
        assert silent.closed
        with pytest.raises(ConnectionClosedError):
            await silent.ping()


async def test_events_iterator_ends_on_close(tidings_server: RunningServer, pair: Pair) -> None:
    client = await TidingsClient.connect(tidings_server.ws_url, pair.alice_token)
    seen: list[ClientEvent] = []

    async def consume() -> None:
        async for event in client.events():
            seen.append(event)

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.05)
    await client.close()
    async with asyncio.timeout(EVENT_TIMEOUT_S):
        await task
    assert client.closed
    with pytest.raises(ConnectionClosedError):
        await client.send(pair.cid, "after close")
    await client.close()  # idempotent
