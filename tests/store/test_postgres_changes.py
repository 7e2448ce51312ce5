"""The PostgreSQL change stream under writers whose versions commit out of order.

Positions are versions taken from a sequence inside each append's
transaction, so a larger one can commit before a smaller one; a consumer that
resumed from the largest position it had seen would skip the late one for
good. ``changes_after`` stops at the low-water mark instead. Every wait is
bounded by ``WAIT_S``.
"""

from __future__ import annotations

import asyncio
import random

import asyncpg  # type: ignore[import-untyped]

from tests.store.test_postgres import (
    WAIT_S,
    admin,  # noqa: F401 (a fixture)
    close_nodes,
    db_url,  # noqa: F401 (a fixture)
    open_nodes,
    text,
    world,
)
from tidings.core.models import Change
from tidings.store.postgres import PostgresStore


async def test_a_version_in_flight_holds_the_stream_back(
    db_url: str,  # noqa: F811
    admin: asyncpg.Connection,  # noqa: F811
) -> None:
    """An append that took its version and has not committed hides every later
    position, even one already committed, until it ends."""
    (store,) = await open_nodes(db_url, 1)
    try:
        w = await world(store, users=2, convs=2)
        early, late = w.convs
        start = (await store.changes_after(0)).next_position
        async with admin.transaction():
            await admin.fetchrow(
                "SELECT * FROM tidings_append_item($1, $2, $3, $4, $5, $6, $7)",
                early.conversation_id,
                w.users[0].user_id,
                w.devices[0].device_id,
                "slow",
                b'{"text": "slow"}',
                1,
                "m_slow",
            )
            fast = await store.append(text(late.conversation_id, w.users[0], w.devices[0], "fast"))
            held = await store.changes_after(start)
            assert held.changes == []
            assert held.next_position == start  # not past the version in flight
        batch = await store.changes_after(start)
        assert [c.message.client_msg_id for c in batch.changes] == ["slow", "fast"]
        assert batch.changes[1].message == fast.message
    finally:
        await close_nodes([store])


async def test_a_polling_consumer_never_skips_a_change_committed_late(
    db_url: str,  # noqa: F811
    admin: asyncpg.Connection,  # noqa: F811
) -> None:
    """Many writers on three nodes (own pools) append while a consumer polls
    through all three; a test-only trigger sleeps a random few milliseconds
    after each message INSERT (after the version was taken, before COMMIT),
    so versions commit out of order all the time. The consumer, resuming from
    each batch's ``next_position``, sees every message exactly once."""
    await admin.execute(
        "CREATE FUNCTION test_jitter() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN PERFORM pg_sleep(random() * 0.008); RETURN NULL; END $$;"
        " CREATE TRIGGER test_jitter AFTER INSERT ON messages"
        " FOR EACH ROW EXECUTE FUNCTION test_jitter()"
    )
    nodes: list[PostgresStore] = await open_nodes(db_url, 3)
    try:
        w = await world(nodes[0], users=2, convs=20)
        seen: list[Change] = []
        done = asyncio.Event()

        async def writer(index: int) -> None:
            rng = random.Random(index)
            for i in range(40):
                conv = rng.choice(w.convs)
                node = nodes[rng.randrange(len(nodes))]
                await node.append(
                    text(conv.conversation_id, w.users[0], w.devices[0], f"{index}-{i}")
                )

        async def consumer() -> int:
            position, polls = 0, 0
            while True:
                finished = done.is_set()
                batch = await nodes[polls % 3].changes_after(position, 50)
                assert batch.next_position >= position
                seen.extend(batch.changes)
                position, polls = batch.next_position, polls + 1
                if finished and position >= batch.head:
                    return polls

        async with asyncio.timeout(WAIT_S):
            polling = asyncio.create_task(consumer())
            await asyncio.gather(*(writer(i) for i in range(24)))
            done.set()
            polls = await polling
        assert polls > 10  # the polls really interleaved with the writes
        positions = [c.position for c in seen]
        assert positions == sorted(set(positions))  # in order, none twice
        stored = await admin.fetch("SELECT message_id FROM messages")
        assert sorted(c.message.message_id for c in seen) == sorted(r[0] for r in stored)
        assert len(seen) == 24 * 40
    finally:
        await close_nodes(nodes)
