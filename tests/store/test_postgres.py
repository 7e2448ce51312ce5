"""PostgreSQL-specific store tests: several nodes on one database, races the
conformance suite cannot stage with one handle, and an unreachable server.

"Nodes" are separate :class:`PostgresStore` instances, each with its own
connection pool, as separate processes would have. Every wait is bounded by
``WAIT_S``.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator

import asyncpg  # type: ignore[import-untyped]
import pytest

from tests.services_postgres import PostgresService, create_test_database, with_database
from tidings.core.errors import ErrorCode, TidingsError
from tidings.core.models import (
    AppendResult,
    Conversation,
    ConversationKind,
    Device,
    NewMessage,
    User,
)
from tidings.store.postgres import APPLICATION_NAME, PostgresStore

WAIT_S = 60.0
NOW = 1_700_000_000_000
GROUP = ConversationKind.GROUP


@pytest.fixture
async def db_url(postgres_service: PostgresService) -> str:
    """A fresh migrated database (dropped after the test by the conftest)."""
    return await create_test_database()


@pytest.fixture
async def admin(db_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A raw connection to the test database, for staging locks and checks."""
    conn = await asyncpg.connect(db_url)
    try:
        yield conn
    finally:
        await conn.close()


async def open_nodes(url: str, count: int, **options: int | float) -> list[PostgresStore]:
    nodes = [PostgresStore(url, **options) for _ in range(count)]  # type: ignore[arg-type]
    await asyncio.gather(*(node.start() for node in nodes))
    return nodes


async def close_nodes(nodes: list[PostgresStore]) -> None:
    await asyncio.gather(*(node.close() for node in nodes))


def text(cid: str, sender: User, device: Device, client_msg_id: str) -> NewMessage:
    content = json.dumps({"text": client_msg_id}).encode()
    return NewMessage(cid, sender.user_id, device.device_id, client_msg_id, content, NOW)


class World:
    def __init__(self, users: list[User], devices: list[Device], convs: list[Conversation]):
        self.users, self.devices, self.convs = users, devices, convs


async def world(store: PostgresStore, users: int = 2, convs: int = 1) -> World:
    people = [await store.create_user(f"user{i}", "h", NOW) for i in range(users)]
    devices = [await store.create_device(u.user_id, "phone", f"t-{u.user_id}", NOW) for u in people]
    others = [u.user_id for u in people[1:]]
    rooms = [
        (await store.create_conversation(GROUP, people[0].user_id, others, f"g{i}", NOW))[0]
        for i in range(convs)
    ]
    return World(people, devices, rooms)


async def waiting_on_locks(url: str, count: int) -> None:
    """Return once ``count`` store connections are blocked on a lock.

    Its own connection: ``pg_stat_activity`` is frozen for the rest of a
    transaction once read, and the caller's connection holds the lock in one.
    """
    conn = await asyncpg.connect(url)
    try:
        async with asyncio.timeout(WAIT_S):
            while True:
                waiting = await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1"
                    " AND datname = current_database() AND wait_event_type = 'Lock'",
                    APPLICATION_NAME,
                )
                if waiting >= count:
                    return
                await asyncio.sleep(0.01)
    finally:
        await conn.close()


# -- many nodes, one conversation ----------------------------------------------------
async def test_nodes_appending_to_one_conversation_get_gap_free_seqs(db_url: str) -> None:
    nodes = await open_nodes(db_url, 4)
    try:
        w = await world(nodes[0], users=4)
        cid = w.convs[0].conversation_id
        per_writer = 40

        async def writer(index: int) -> list[AppendResult]:
            node = nodes[index % len(nodes)]
            user, device = w.users[index % 4], w.devices[index % 4]
            return [
                await node.append(text(cid, user, device, f"w{index}-{i}"))
                for i in range(per_writer)
            ]

        async with asyncio.timeout(WAIT_S):
            results = await asyncio.gather(*(writer(i) for i in range(16)))
        seqs = sorted(r.message.seq for rs in results for r in rs)
        total = 16 * per_writer
        assert seqs == list(range(1, total + 1))
        for rs in results:
            assert [r.message.seq for r in rs] == sorted(r.message.seq for r in rs)
        conv = await nodes[1].get_conversation(cid)
        assert conv is not None
        assert conv.last_seq == total
        assert [m.seq for m in await nodes[2].history(cid, limit=total)] == seqs
    finally:
        await close_nodes(nodes)


async def test_concurrent_migrations_apply_once(postgres_service: PostgresService) -> None:
    url = await create_test_database(migrated=False)
    nodes = await open_nodes(url, 5)
    try:
        assert len({node.epoch for node in nodes}) == 1
        conn = await asyncpg.connect(url)
        try:
            assert await conn.fetchval("SELECT count(*) FROM schema_version") >= 1
            names = await conn.fetch("SELECT name FROM schema_version ORDER BY version")
            assert len({r["name"] for r in names}) == len(names)
        finally:
            await conn.close()
    finally:
        await close_nodes(nodes)


# -- duplicates -------------------------------------------------------------------
async def test_racing_duplicates_store_one_and_roll_back_the_rest(
    db_url: str, admin: asyncpg.Connection
) -> None:
    """Identical sends that all passed the duplicate check (they queue on the
    conversation's row lock, held here) must end as one message: the losers
    hit the unique index, roll back their seq bump, and return the winner."""
    nodes = await open_nodes(db_url, 3)
    try:
        w = await world(nodes[0])
        cid = w.convs[0].conversation_id
        _, token = await nodes[0].list_conversations(w.users[1].user_id, "d_x")
        tx = admin.transaction()
        await tx.start()
        await admin.execute(
            "SELECT 1 FROM conversations WHERE conversation_id = $1 FOR UPDATE", cid
        )
        sends = [
            asyncio.create_task(nodes[i % 3].append(text(cid, w.users[0], w.devices[0], "same")))
            for i in range(9)
        ]
        await waiting_on_locks(db_url, 9)
        await tx.rollback()
        async with asyncio.timeout(WAIT_S):
            results = await asyncio.gather(*sends)
        assert sum(not r.duplicate for r in results) == 1
        assert {r.message for r in results} == {results[0].message}
        assert results[0].message.seq == 1
        assert [m.seq for m in await nodes[1].history(cid)] == [1]
        members = {m.user_id: m for m in await nodes[1].get_members(cid)}
        assert members[w.users[0].user_id].read_seq == 1
        # Exactly one change since the token; the rolled-back versions are invisible.
        changed, new_token = await nodes[2].list_conversations(w.users[1].user_id, "d_x", token)
        assert [(c.conversation_id, c.last_seq) for c in changed] == [(cid, 1)]
        assert await nodes[2].list_conversations(w.users[1].user_id, "d_x", new_token) == (
            [],
            new_token,
        )
    finally:
        await close_nodes(nodes)


async def test_duplicate_key_racing_across_conversations(db_url: str) -> None:
    """The idempotency key is per sender, not per conversation: the same key
    sent to two conversations at once is stored once, in one of them."""
    nodes = await open_nodes(db_url, 2)
    try:
        w = await world(nodes[0], convs=2)
        a, b = (c.conversation_id for c in w.convs)
        for round_ in range(20):
            key = f"k{round_}"
            async with asyncio.timeout(WAIT_S):
                first, second = await asyncio.gather(
                    nodes[0].append(text(a, w.users[0], w.devices[0], key)),
                    nodes[1].append(text(b, w.users[0], w.devices[0], key)),
                )
            assert sorted([first.duplicate, second.duplicate]) == [False, True]
            assert first.message == second.message
        total = 0
        for cid in (a, b):
            conv = await nodes[0].get_conversation(cid)
            assert conv is not None
            history = await nodes[0].history(cid)
            assert [m.seq for m in history] == list(range(1, conv.last_seq + 1))
            total += conv.last_seq
        assert total == 20
    finally:
        await close_nodes(nodes)


# -- sync tokens under concurrent commits ---------------------------------------------
async def test_sync_tokens_never_skip_a_change_committed_late(
    db_url: str, admin: asyncpg.Connection
) -> None:
    """A client that follows its tokens sees every conversation's final state.

    A test-only trigger sleeps a random few milliseconds after each message
    INSERT, i.e. after the version was taken and before COMMIT, so versions
    commit out of order all the time; a token equal to the largest version
    taken (or committed) would skip the late ones.
    """
    await admin.execute(
        "CREATE FUNCTION test_jitter() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN PERFORM pg_sleep(random() * 0.008); RETURN NULL; END $$;"
        " CREATE TRIGGER test_jitter AFTER INSERT ON messages"
        " FOR EACH ROW EXECUTE FUNCTION test_jitter()"
    )
    nodes = await open_nodes(db_url, 3)
    try:
        w = await world(nodes[0], users=2, convs=30)
        reader = w.users[1]
        seen: dict[str, int] = {}
        done = asyncio.Event()

        async def writer(index: int) -> None:
            rng = random.Random(index)
            for i in range(60):
                conv = rng.choice(w.convs)
                node = nodes[rng.randrange(len(nodes))]
                await node.append(
                    text(conv.conversation_id, w.users[0], w.devices[0], f"{index}-{i}")
                )

        async def client() -> int:
            token, rounds = 0, 0
            while True:
                finished = done.is_set()
                changed, new_token = await nodes[rounds % 3].list_conversations(
                    reader.user_id, "d_sync", token
                )
                assert new_token >= token
                for state in changed:
                    seen[state.conversation_id] = max(
                        seen.get(state.conversation_id, 0), state.last_seq
                    )
                token, rounds = new_token, rounds + 1
                if finished:
                    return rounds

        async with asyncio.timeout(WAIT_S):
            listing = asyncio.create_task(client())
            await asyncio.gather(*(writer(i) for i in range(24)))
            done.set()
            rounds = await listing
        assert rounds > 10  # the listings really interleaved with the writes
        final = {
            c.conversation_id: c.last_seq
            for c in (await nodes[0].list_conversations(reader.user_id, "d"))[0]
        }
        assert sum(final.values()) == 24 * 60
        assert seen == final
    finally:
        await close_nodes(nodes)


async def test_token_is_stable_when_nothing_changes(db_url: str) -> None:
    nodes = await open_nodes(db_url, 2)
    try:
        w = await world(nodes[0])
        cid = w.convs[0].conversation_id
        await nodes[0].append(text(cid, w.users[0], w.devices[0], "one"))
        # A failed append (not a member) consumes a version number and rolls back.
        outsider = await nodes[0].create_user("outsider", "h", NOW)
        with pytest.raises(TidingsError):
            await nodes[1].append(text(cid, outsider, w.devices[0], "nope"))
        listed, token = await nodes[0].list_conversations(w.users[1].user_id, "d")
        assert token == listed[0].version
        assert await nodes[1].list_conversations(w.users[1].user_id, "d", token) == ([], token)
    finally:
        await close_nodes(nodes)


# -- PostgreSQL unreachable ------------------------------------------------------------------
async def test_closed_port_is_unavailable() -> None:
    store = PostgresStore("postgresql://postgres@127.0.0.1:9/postgres")
    with pytest.raises(TidingsError) as info:
        await store.start()
    assert info.value.code is ErrorCode.UNAVAILABLE
    assert info.value.retryable
    with pytest.raises(TidingsError) as info:
        await store.ping()
    assert info.value.code is ErrorCode.UNAVAILABLE


async def test_terminated_connections_fail_unavailable_and_write_nothing(
    db_url: str, admin: asyncpg.Connection
) -> None:
    """Server connections killed mid-append: every append fails retryably,
    nothing is half written, and the store works again right after."""
    (store,) = await open_nodes(db_url, 1)
    try:
        w = await world(store)
        cid = w.convs[0].conversation_id
        tx = admin.transaction()
        await tx.start()
        await admin.execute(
            "SELECT 1 FROM conversations WHERE conversation_id = $1 FOR UPDATE", cid
        )
        sends = [
            asyncio.create_task(store.append(text(cid, w.users[0], w.devices[0], f"m{i}")))
            for i in range(5)
        ]
        await waiting_on_locks(db_url, 5)
        killed = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = $1 AND datname = current_database()",
            APPLICATION_NAME,
        )
        assert killed >= 5
        async with asyncio.timeout(WAIT_S):
            outcomes = await asyncio.gather(*sends, return_exceptions=True)
        await tx.rollback()
        for outcome in outcomes:
            assert isinstance(outcome, TidingsError), outcome
            assert outcome.code is ErrorCode.UNAVAILABLE
        assert await admin.fetchval("SELECT count(*) FROM messages") == 0
        assert await admin.fetchval("SELECT last_seq FROM conversations") == 0
        # Recovery: the pool replaces the dead connections.
        await store.ping()
        retried = await store.append(text(cid, w.users[0], w.devices[0], "m0"))
        assert (retried.duplicate, retried.message.seq) == (False, 1)
    finally:
        await store.close()


async def test_stuck_statement_and_exhausted_pool_are_unavailable(
    db_url: str, admin: asyncpg.Connection
) -> None:
    nodes = await open_nodes(
        db_url, 1, min_size=1, max_size=1, acquire_timeout_s=0.3, statement_timeout_ms=500
    )
    store = nodes[0]
    try:
        w = await world(store)
        cid = w.convs[0].conversation_id
        tx = admin.transaction()
        await tx.start()
        await admin.execute(
            "SELECT 1 FROM conversations WHERE conversation_id = $1 FOR UPDATE", cid
        )
        stuck = asyncio.create_task(store.append(text(cid, w.users[0], w.devices[0], "a")))
        await waiting_on_locks(db_url, 1)
        # The only connection is busy: acquiring another times out.
        with pytest.raises(TidingsError) as info:
            await store.get_conversation(cid)
        assert info.value.code is ErrorCode.UNAVAILABLE
        # The blocked statement hits statement_timeout and rolls back.
        with pytest.raises(TidingsError) as info:
            await stuck
        assert info.value.code is ErrorCode.UNAVAILABLE
        await tx.rollback()
        assert await admin.fetchval("SELECT count(*) FROM messages") == 0
        assert (await store.append(text(cid, w.users[0], w.devices[0], "a"))).message.seq == 1
    finally:
        await store.close()


async def test_reset_epoch_persists(db_url: str) -> None:
    (store,) = await open_nodes(db_url, 1)
    old = store.epoch
    new = await store.reset_epoch()
    await store.close()
    assert new != old
    (again,) = await open_nodes(db_url, 1)
    try:
        assert again.epoch == new
    finally:
        await again.close()


def test_url_helpers() -> None:
    assert PostgresStore.from_url("postgresql://u@h:1/db").url == "postgresql://u@h:1/db"
    with pytest.raises(ValueError, match="not a postgresql URL"):
        PostgresStore("sqlite:///x.db")
    assert with_database("postgresql://u@h:1/postgres?x=1", "t") == "postgresql://u@h:1/t?x=1"
