"""Store conformance, the change stream and its consumers
(``MessageLog.changes_after``, ``ConsumerStore`` positions and leases), on
every engine like the rest of the conformance suite.

Every wait is bounded by ``WAIT_S``.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from tests.store.support import (
    NOW,
    WAIT_S,
    StoreOpener,
    event,
    make_user,
    pair,
    text,
)
from tidings.core.models import Change, ConversationKind
from tidings.core.ports.store.accounts import AccountStore
from tidings.core.ports.store.consumers import ConsumerStore
from tidings.core.ports.store.conversations import ConversationStore
from tidings.core.ports.store.messages import MessageLog

LEASE_MS = 60_000


class Subject(AccountStore, ConversationStore, MessageLog, ConsumerStore, Protocol):
    """The change stream and its consumers, with the conversations appended to."""


async def read_all(store: MessageLog, position: int = 0, limit: int = 100) -> list[Change]:
    """Every change after ``position``, page by page."""
    changes: list[Change] = []
    async with asyncio.timeout(WAIT_S):
        while True:
            batch = await store.changes_after(position, limit)
            changes.extend(batch.changes)
            assert batch.next_position >= position
            if batch.next_position >= batch.head:
                return changes
            position = batch.next_position


async def test_every_stored_message_is_a_change_in_append_order(store: Subject) -> None:
    p = await pair(store)
    carol = await make_user(store, "carol")
    other, _ = await store.create_conversation(
        ConversationKind.DIRECT, p.alice.user_id, [p.bob.user_id], None, NOW
    )
    stored = [
        (await store.append(text(p.cid, p.alice, p.a_dev, "m1"))).message,
        (await store.append(text(other.conversation_id, p.bob, p.b_dev, "m2"))).message,
    ]
    changed = await store.change_members(
        p.cid, [carol.user_id], [], event(p.cid, p.alice, p.a_dev, "add-carol", "member_added")
    )
    assert changed is not None
    stored.append(changed.message)
    stored.append((await store.append(text(p.cid, p.bob, p.b_dev, "m3"))).message)
    # A duplicate stores nothing, so it is no change either.
    assert (await store.append(text(p.cid, p.alice, p.a_dev, "m1"))).duplicate

    batch = await store.changes_after(0)
    assert [c.message for c in batch.changes] == stored
    positions = [c.position for c in batch.changes]
    assert positions == sorted(set(positions))
    assert positions[0] > 0
    assert batch.next_position == batch.head >= positions[-1]
    assert (await store.changes_after(positions[1])).changes == batch.changes[2:]


async def test_pages_resume_where_the_last_one_ended(store: Subject) -> None:
    p = await pair(store)
    await asyncio.gather(
        *(store.append(text(p.cid, p.alice, p.a_dev, f"burst-{i}")) for i in range(25))
    )
    everything = (await store.changes_after(0, 1000)).changes
    assert [c.message.seq for c in everything] == list(range(1, 26))
    first = await store.changes_after(0, 10)
    assert first.changes == everything[:10]
    assert first.next_position == everything[9].position < first.head
    assert await read_all(store, 0, 10) == everything
    assert await read_all(store, 0, 25) == everything
    nothing = await store.changes_after(0, 0)
    assert (nothing.changes, nothing.next_position) == ([], 0)


async def test_a_caught_up_reader_gets_nothing_and_stays_put(store: Subject) -> None:
    empty = await store.changes_after(0)
    assert (empty.changes, empty.next_position) == ([], empty.head)
    p = await pair(store)
    await store.append(text(p.cid, p.alice, p.a_dev, "only"))
    done = await store.changes_after(0)
    again = await store.changes_after(done.next_position)
    assert again.changes == []
    assert again.next_position == done.next_position
    # A position beyond the head (from a store restored to an older backup)
    # is never moved back.
    assert (await store.changes_after(done.head + 50)).next_position == done.head + 50


async def test_consumer_positions_are_saved_by_the_lease_holder_only(store: Subject) -> None:
    assert await store.consumer_position("search") == 0
    assert await store.take_consumer_lease("search", "node-a", LEASE_MS)
    assert await store.take_consumer_lease("search", "node-a", LEASE_MS)  # a renewal
    assert not await store.take_consumer_lease("search", "node-b", LEASE_MS)
    assert await store.save_consumer_position("search", 7, "node-a", LEASE_MS)
    assert not await store.save_consumer_position("search", 9, "node-b", LEASE_MS)
    assert await store.save_consumer_position("search", 5, "node-a", LEASE_MS)  # never back
    assert await store.consumer_position("search") == 7
    # Names are independent.
    assert await store.consumer_position("push") == 0
    assert await store.take_consumer_lease("push", "node-b", LEASE_MS)


async def test_a_released_or_expired_lease_is_taken_over(store: Subject) -> None:
    assert await store.take_consumer_lease("search", "node-a", LEASE_MS)
    await store.release_consumer_lease("search", "node-b")  # not its lease: no effect
    assert not await store.take_consumer_lease("search", "node-b", LEASE_MS)
    await store.release_consumer_lease("search", "node-a")
    assert await store.take_consumer_lease("search", "node-b", 50)
    assert not await store.save_consumer_position("search", 3, "node-a", LEASE_MS)
    async with asyncio.timeout(WAIT_S):
        while True:  # until node-b's 50 ms have passed
            if await store.take_consumer_lease("search", "node-a", LEASE_MS):
                break
            await asyncio.sleep(0.02)
    assert not await store.save_consumer_position("search", 3, "node-b", LEASE_MS)
    assert await store.save_consumer_position("search", 3, "node-a", LEASE_MS)
    assert await store.consumer_position("search") == 3


async def test_positions_survive_a_reopen(open_store: StoreOpener) -> None:
    first = await open_store()
    try:
        assert await first.take_consumer_lease("search", "node-a", LEASE_MS)
        assert await first.save_consumer_position("search", 11, "node-a", LEASE_MS)
    finally:
        await first.close()
    second = await open_store()
    try:
        assert await second.consumer_position("search") == 11
    finally:
        await second.close()
