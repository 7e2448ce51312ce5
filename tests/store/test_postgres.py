"""PostgreSQL-specific store tests: several nodes on one database, races the
conformance suite cannot stage with one handle, and an unreachable server.

"Nodes" are separate :class:`PostgresStore` instances, each with its own
connection pool, as separate processes would have. Every wait is bounded by
``WAIT_S``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest

from tests.services_postgres import PostgresService, create_test_database, with_database
from tidings.core.errors import ErrorCode, TidingsError
from tidings.core.models import (
    AppendResult,
    Conversation,
    ConversationKind,
    CursorState,
    Device,
    NewMessage,
    User,
)
from tidings.store.postgres import APPLICATION_NAME, PostgresStore
from tidings.store.postgres_batches import (
    CURSOR_BATCH_MAX,
    Batcher,
    BatchStats,
    CursorMove,
    CursorOutcome,
)

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
    hit the unique index, roll back their seq bump, and return the winner.
    Each node sends its three as one batch (one statement waiting per node),
    where the second and third find the first; the losing nodes' batches fail
    on the unique index and are re-sent one append at a time."""
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
        await waiting_on_locks(db_url, 3)
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
        await waiting_on_locks(db_url, 1)  # the five go out as one batch
        killed = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = $1 AND datname = current_database()",
            APPLICATION_NAME,
        )
        assert killed >= 1
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


def test_url_helpers() -> None:
    assert PostgresStore.from_url("postgresql://u@h:1/db").url == "postgresql://u@h:1/db"
    with pytest.raises(ValueError, match="not a postgresql URL"):
        PostgresStore("sqlite:///x.db")
    assert with_database("postgresql://u@h:1/postgres?x=1", "t") == "postgresql://u@h:1/t?x=1"


# -- cursor moves in batches ---------------------------------------------------------------
def move_of(case: tuple[str, str, str, int, int]) -> CursorMove:
    """A CursorMove with a fresh future, for the batcher's own tests."""
    future: asyncio.Future[CursorState] = asyncio.get_running_loop().create_future()
    return CursorMove(*case, future)


class FakeSend:
    """A stand-in for the store's batch sender: records each batch, waits for
    ``gate`` (open unless closed by the test), fails moves of ``poison``."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.entered = asyncio.Event()
        self.poison: set[str] = set()
        self.failure: Exception | None = None

    async def __call__(self, moves: Sequence[CursorMove]) -> list[CursorOutcome]:
        self.batches.append([m.user_id for m in moves])
        self.entered.set()
        await self.gate.wait()
        if self.failure is not None:
            raise self.failure
        if any(m.user_id in self.poison for m in moves):
            raise RuntimeError("poisoned batch")
        return [
            TidingsError(ErrorCode.NOT_MEMBER, "not a member of this conversation")
            if m.user_id.startswith("outsider")
            else CursorState(m.conversation_id, m.user_id, m.delivered_seq, m.read_seq, True)
            for m in moves
        ]


def submit_all(batcher: Batcher[CursorMove], users: list[str]) -> list[asyncio.Future[CursorState]]:
    moves = [move_of(("c", user, "d", 1, 0)) for user in users]
    for move in moves:
        batcher.submit(move)
    return [move.future for move in moves]


async def test_batcher_sends_what_queued_meanwhile_as_the_next_batch() -> None:
    send = FakeSend()
    batcher = Batcher(send, 4, "cursor")
    send.gate.clear()
    first = submit_all(batcher, ["a", "b"])
    async with asyncio.timeout(WAIT_S):
        await send.entered.wait()  # batch ["a", "b"] is in flight
        later = submit_all(batcher, ["c", "d", "e", "f", "g", "h", "i"])
        send.gate.set()
        results = await asyncio.gather(*first, *later)
    assert send.batches == [["a", "b"], ["c", "d", "e", "f"], ["g", "h", "i"]]
    assert [r.user_id for r in results] == list("abcdefghi")
    assert batcher.stats == BatchStats(writes=9, batches=3)


async def test_batcher_keeps_errors_per_move_and_survives_failures() -> None:
    send = FakeSend()
    batcher = Batcher(send, CURSOR_BATCH_MAX, "cursor")
    send.poison = {"p"}
    async with asyncio.timeout(WAIT_S):
        # An unexpected failure: the batch is re-sent move by move, so only
        # the poisoned move fails; a non-member fails alone anyway.
        outcomes = await asyncio.gather(
            *submit_all(batcher, ["a", "p", "outsider", "b"]), return_exceptions=True
        )
        assert isinstance(outcomes[1], RuntimeError)
        assert isinstance(outcomes[2], TidingsError)
        assert outcomes[2].code is ErrorCode.NOT_MEMBER
        assert [o.user_id for o in (outcomes[0], outcomes[3])] == ["a", "b"]  # type: ignore[union-attr]
        assert send.batches == [["a", "p", "outsider", "b"], ["a"], ["p"], ["outsider"], ["b"]]
        # The database is down: every move of the batch gets its own unavailable.
        send.failure = TidingsError(ErrorCode.UNAVAILABLE, "store unavailable: down")
        failed = await asyncio.gather(*submit_all(batcher, ["c", "d"]), return_exceptions=True)
        for outcome in failed:
            assert isinstance(outcome, TidingsError)
            assert outcome.code is ErrorCode.UNAVAILABLE
            assert outcome.retryable
        assert failed[0] is not failed[1]
        # And the flusher carries on.
        send.failure = None
        (state,) = await asyncio.gather(*submit_all(batcher, ["e"]))
    assert state.user_id == "e"


async def test_batcher_skips_cancelled_callers() -> None:
    send = FakeSend()
    batcher = Batcher(send, CURSOR_BATCH_MAX, "cursor")
    send.gate.clear()
    first = submit_all(batcher, ["a"])
    async with asyncio.timeout(WAIT_S):
        await send.entered.wait()
        queued = submit_all(batcher, ["gone", "b"])
        queued[0].cancel()
        send.gate.set()
        await asyncio.gather(*first, queued[1])
    assert send.batches == [["a"], ["b"]]


async def test_batcher_close_fails_what_cannot_finish() -> None:
    send = FakeSend()
    batcher = Batcher(send, CURSOR_BATCH_MAX, "cursor")
    send.gate.clear()  # the batch in flight never finishes
    in_flight = submit_all(batcher, ["a"])
    async with asyncio.timeout(WAIT_S):
        await send.entered.wait()
        queued = submit_all(batcher, ["b"])
        await batcher.close(timeout_s=0.05)
        outcomes = await asyncio.gather(*in_flight, *queued, return_exceptions=True)
    for outcome in outcomes:
        assert isinstance(outcome, TidingsError)
        assert outcome.code is ErrorCode.UNAVAILABLE


async def advance_all(
    store: PostgresStore, cid: str, moves: list[tuple[User, Device, int | None, int | None]]
) -> list[CursorState | BaseException]:
    async with asyncio.timeout(WAIT_S):
        return await asyncio.gather(
            *(
                store.advance_cursors(cid, user.user_id, device.device_id, delivered, read)
                for user, device, delivered, read in moves
            ),
            return_exceptions=True,
        )


async def test_concurrent_moves_are_one_statement_and_one_transaction(
    db_url: str, admin: asyncpg.Connection
) -> None:
    (store,) = await open_nodes(db_url, 1)
    try:
        w = await world(store, users=120)
        cid = w.convs[0].conversation_id
        await store.append(text(cid, w.users[0], w.devices[0], "one"))
        before = store.cursor_batch_stats
        outcomes = await advance_all(
            store, cid, [(u, d, 1, None) for u, d in zip(w.users[1:], w.devices[1:], strict=True)]
        )
        after = store.cursor_batch_stats
        assert all(isinstance(o, CursorState) and o.moved for o in outcomes), outcomes
        assert (after.writes - before.writes, after.batches - before.batches) == (119, 1)
        # Every row the batch wrote carries one transaction id.
        xids = await admin.fetchval(
            "SELECT count(DISTINCT x) FROM ("
            " SELECT xmin::text AS x FROM members WHERE conversation_id = $1 AND user_id <> $2"
            " UNION ALL"
            " SELECT xmin::text FROM device_cursors WHERE conversation_id = $1 AND device_id <> $3"
            ") AS written",
            cid,
            w.users[0].user_id,
            w.devices[0].device_id,
        )
        assert xids == 1
        assert (
            await admin.fetchval(
                "SELECT count(*) FROM device_cursors WHERE conversation_id = $1", cid
            )
            == 120
        )
    finally:
        await store.close()


async def test_batches_are_capped(db_url: str) -> None:
    (store,) = await open_nodes(db_url, 1, cursor_batch_max=10)
    try:
        w = await world(store, users=26)
        cid = w.convs[0].conversation_id
        for i in range(3):
            await store.append(text(cid, w.users[0], w.devices[0], f"m{i}"))
        outcomes = await advance_all(
            store, cid, [(u, d, 3, 2) for u, d in zip(w.users[1:], w.devices[1:], strict=True)]
        )
        assert {(o.delivered_seq, o.read_seq) for o in outcomes} == {(3, 2)}  # type: ignore[union-attr]
        assert store.cursor_batch_stats.batches == 3
    finally:
        await store.close()


async def test_bad_moves_in_a_batch_fail_alone(db_url: str) -> None:
    (store,) = await open_nodes(db_url, 1)
    try:
        w = await world(store, users=5)
        cid = w.convs[0].conversation_id
        for i in range(4):
            await store.append(text(cid, w.users[0], w.devices[0], f"m{i}"))
        outsider = await store.create_user("outsider", "h", NOW)
        outsider_device = Device("d_outsider", outsider.user_id, "phone", NOW)
        bad_ids = [
            Device("d_nul\x00", w.users[1].user_id, "x", NOW),
            Device("d_surrogate\ud800", w.users[2].user_id, "x", NOW),
        ]
        moves: list[tuple[User, Device, int | None, int | None]] = [
            (w.users[1], w.devices[1], 2, None),
            (outsider, outsider_device, 1, 1),
            (w.users[1], bad_ids[0], 1, None),
            (w.users[2], bad_ids[1], 1, None),
            (w.users[3], w.devices[3], None, 3),
            (w.users[1], w.devices[1], 4, 1),
        ]
        outcomes = await advance_all(store, cid, moves)
        for bad in outcomes[1:4]:
            assert isinstance(bad, TidingsError)
            assert bad.code is ErrorCode.NOT_MEMBER
        good = [outcomes[0], outcomes[4], outcomes[5]]
        assert [(o.delivered_seq, o.read_seq, o.moved) for o in good] == [  # type: ignore[union-attr]
            (2, 0, True),
            (3, 3, True),
            (4, 1, True),
        ]
        assert store.cursor_batch_stats.batches == 1  # unstorable ids never reach the batch
    finally:
        await store.close()


async def test_concurrent_appends_are_one_statement_with_outcomes_of_their_own(
    db_url: str, admin: asyncpg.Connection
) -> None:
    """Appends waiting together go out as one ``tidings_append_many`` (one
    transaction); a non-member's append and a repeated key among them get
    their own outcomes, and the rest are stored in the order called."""
    (store,) = await open_nodes(db_url, 1)
    try:
        w = await world(store, users=3, convs=2)
        first, second = (c.conversation_id for c in w.convs)
        outsider = await store.create_user("outsider", "h", NOW)
        outsider_device = Device("d_outsider", outsider.user_id, "phone", NOW)
        calls = [
            text(second, w.users[1], w.devices[1], "b0"),
            text(first, w.users[0], w.devices[0], "a0"),
            text(first, outsider, outsider_device, "x0"),
            text(first, w.users[1], w.devices[1], "b1"),
            text(first, w.users[0], w.devices[0], "a0"),  # the same key again
            text(first, w.users[0], w.devices[0], "a1"),
        ]
        before = store.append_batch_stats
        async with asyncio.timeout(WAIT_S):
            outcomes = await asyncio.gather(
                *(store.append(m) for m in calls), return_exceptions=True
            )
        after = store.append_batch_stats
        assert (after.writes - before.writes, after.batches - before.batches) == (6, 1)
        refused = outcomes[2]
        assert isinstance(refused, TidingsError)
        assert refused.code is ErrorCode.NOT_MEMBER
        b0, a0, _, b1, again, a1 = outcomes
        results = (b0, a0, b1, again, a1)
        assert all(isinstance(r, AppendResult) for r in results), outcomes
        b0, a0, b1, again, a1 = (r for r in results if isinstance(r, AppendResult))
        assert (b0.message.seq, b0.duplicate) == (1, False)
        assert (again.message, again.duplicate) == (a0.message, True)
        # One sender's appends keep their order; senders may interleave either way.
        assert a0.message.seq < a1.message.seq
        assert {a0.message.seq, b1.message.seq, a1.message.seq} == {1, 2, 3}
        history = await store.history(first)
        assert [m.message_id for m in history] == [
            r.message.message_id for r in sorted((a0, b1, a1), key=lambda r: r.message.seq)
        ]
        assert await admin.fetchval("SELECT count(*) FROM messages") == 4
    finally:
        await store.close()


async def test_the_one_message_function_still_answers_as_before(
    db_url: str, admin: asyncpg.Connection
) -> None:
    """``tidings_append``, which nodes of the previous version call during a
    rolling upgrade, keeps its result and its error on top of the batch steps."""
    (store,) = await open_nodes(db_url, 1)
    try:
        w = await world(store, users=2)
    finally:
        await store.close()
    cid, sender, device = w.convs[0].conversation_id, w.users[0].user_id, w.devices[0].device_id
    call = "SELECT * FROM tidings_append($1, $2, $3, $4, $5, $6, $7)"
    first = await admin.fetchrow(call, cid, sender, device, "k", b"{}", NOW, "m_1")
    again = await admin.fetchrow(call, cid, sender, device, "k", b"{}", NOW, "m_2")
    assert (first["seq"], first["message_id"], first["duplicate"]) == (1, "m_1", False)
    assert (again["seq"], again["message_id"], again["duplicate"]) == (1, "m_1", True)
    with pytest.raises(asyncpg.PostgresError) as refused:
        await admin.fetchrow(call, cid, "u_outsider", "d_x", "k2", b"{}", NOW, "m_3")
    assert refused.value.sqlstate == "TD403"
    assert await admin.fetchval("SELECT last_seq FROM conversations") == 1


APPEND_MANY_SQL = "SELECT * FROM tidings_append_many($1, $2, $3, $4, $5, $6, $7)"


async def test_append_batches_in_opposite_orders_do_not_deadlock(
    db_url: str, admin: asyncpg.Connection
) -> None:
    """``tidings_append_many`` locks its conversations in key order before
    appending in the order given. Two calls naming conversations A and B in
    opposite orders, released together from behind a lock on A, would
    otherwise each hold one and wait for the other (a deadlock: one call
    fails after ``deadlock_timeout``); here both complete."""
    (store,) = await open_nodes(db_url, 1)
    try:
        w = await world(store, users=2, convs=2)
    finally:
        await store.close()
    a, b = sorted(c.conversation_id for c in w.convs)
    sender, device = w.users[0].user_id, w.devices[0].device_id

    def args(order: list[str], tag: str) -> list[list[Any]]:
        n = len(order)
        keys = [f"{tag}{i}" for i in range(n)]
        return [order, [sender] * n, [device] * n, keys, [b"{}"] * n, [NOW] * n, keys]

    callers = [
        await asyncpg.connect(db_url, server_settings={"application_name": APPLICATION_NAME})
        for _ in range(2)
    ]
    try:
        tx = admin.transaction()
        await tx.start()
        await admin.execute("SELECT 1 FROM conversations WHERE conversation_id = $1 FOR UPDATE", a)
        calls = [
            asyncio.create_task(conn.fetch(APPEND_MANY_SQL, *args(order, tag)))
            for conn, order, tag in ((callers[0], [a, b], "x"), (callers[1], [b, a], "y"))
        ]
        await waiting_on_locks(db_url, 2)
        await tx.rollback()
        async with asyncio.timeout(WAIT_S):
            results = await asyncio.gather(*calls)
    finally:
        for conn in callers:
            await conn.close()
    assert [[r["outcome"] for r in rows] for rows in results] == [["stored"] * 2] * 2
    last = await admin.fetch("SELECT conversation_id, last_seq FROM conversations ORDER BY 1")
    assert [tuple(r) for r in last] == [(a, 2), (b, 2)]


async def test_many_function_applies_elements_in_order(
    db_url: str, admin: asyncpg.Connection
) -> None:
    """The SQL function itself: a key repeated in one call, two devices of one
    member, a non-member; each row shows the state right after its element."""
    (store,) = await open_nodes(db_url, 1)
    try:
        w = await world(store, users=2, convs=2)
        a, b = (c.conversation_id for c in w.convs)
        for i in range(10):
            await store.append(text(a, w.users[0], w.devices[0], f"a{i}"))
        for i in range(5):
            await store.append(text(b, w.users[0], w.devices[0], f"b{i}"))
        bob = w.users[1].user_id
        await store.advance_cursors(a, bob, "d_phone", 3, 1)
    finally:
        await store.close()
    elements = [  # conversation, user, device, delivered, read
        (a, bob, "d_phone", 5, 0),
        (a, bob, "d_tablet", 2, 4),
        (a, bob, "d_phone", 100, 2),
        (a, "u_nobody", "d_x", 1, 1),
        (b, bob, "d_phone", 4, 6),
        (a, bob, "d_phone", 7, 0),
        (a, w.users[0].user_id, "", 3, 0),
    ]
    rows = await admin.fetch(
        "SELECT * FROM tidings_advance_cursors_many($1, $2, $3, $4, $5)",
        *(list(column) for column in zip(*elements, strict=True)),
    )
    assert [tuple(r) for r in rows] == [
        (1, 5, 1, True, False),
        (2, 5, 4, True, False),
        (3, 10, 4, True, False),
        (4, None, None, False, True),
        (5, 5, 5, True, False),
        (6, 10, 4, False, False),
        (7, 10, 10, False, False),  # the sender's cursors followed their messages
    ]
    cursors = await admin.fetch(
        "SELECT conversation_id, device_id, delivered_seq FROM device_cursors"
        " WHERE device_id IN ('d_phone', 'd_tablet') ORDER BY 1, 2"
    )
    assert sorted(tuple(r) for r in cursors) == sorted(
        [(a, "d_phone", 10), (a, "d_tablet", 4), (b, "d_phone", 5)]
    )
    # The one-move function is a batch of one and still raises for a non-member.
    single = await admin.fetchrow(
        "SELECT * FROM tidings_advance_cursors($1, $2, $3, 10, 9)", a, bob, "d_phone"
    )
    assert tuple(single) == (10, 9, True)
    with pytest.raises(asyncpg.PostgresError) as info:
        await admin.fetchrow("SELECT * FROM tidings_advance_cursors($1, 'u_nobody', 'd', 1, 1)", a)
    assert info.value.sqlstate == "TD403"


async def lock_member(admin: asyncpg.Connection, cid: str, user_id: str) -> Any:
    """Open a transaction on `admin` holding one member row locked; the caller ends it."""
    tx = admin.transaction()
    await tx.start()
    await admin.execute(
        "SELECT 1 FROM members WHERE conversation_id = $1 AND user_id = $2 FOR UPDATE",
        cid,
        user_id,
    )
    return tx


async def test_a_failed_batch_fails_every_move_unavailable(
    db_url: str, admin: asyncpg.Connection
) -> None:
    """The batch waits on a member row locked elsewhere; its connection is
    killed: every move of it fails retryably, nothing is written, and the
    store moves cursors again right after."""
    (store,) = await open_nodes(db_url, 1)
    try:
        w = await world(store, users=30)
        cid = w.convs[0].conversation_id
        await store.append(text(cid, w.users[0], w.devices[0], "one"))
        tx = await lock_member(admin, cid, w.users[5].user_id)
        pairs = list(zip(w.users[1:], w.devices[1:], strict=True))
        moves = asyncio.ensure_future(advance_all(store, cid, [(u, d, 1, None) for u, d in pairs]))
        await waiting_on_locks(db_url, 1)
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = $1 AND datname = current_database()",
            APPLICATION_NAME,
        )
        outcomes = await moves
        await tx.rollback()
        assert len(outcomes) == 29
        for outcome in outcomes:
            assert isinstance(outcome, TidingsError), outcome
            assert outcome.code is ErrorCode.UNAVAILABLE
        assert store.cursor_batch_stats.batches == 1
        assert (
            await admin.fetchval(
                "SELECT count(*) FROM members WHERE conversation_id = $1 AND delivered_seq > 0", cid
            )
            == 1
        )  # the sender's own
        again = await advance_all(store, cid, [(u, d, 1, None) for u, d in pairs])
        assert all(isinstance(o, CursorState) and o.moved for o in again), again
    finally:
        await store.close()


async def test_a_deadlock_victim_batch_is_run_again(
    db_url: str, admin: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    """Another transaction holds the second member row of the batch (in key
    order) and then asks for the first, which the batch holds: PostgreSQL
    aborts the batch (its deadlock timeout runs out first), and the store
    runs it again, which succeeds once the other transaction is gone."""
    (store,) = await open_nodes(db_url, 1)
    try:
        w = await world(store, users=3)
        cid = w.convs[0].conversation_id
        await store.append(text(cid, w.users[0], w.devices[0], "one"))
        first, second = sorted(
            [(w.users[1], w.devices[1]), (w.users[2], w.devices[2])], key=lambda p: p[0].user_id
        )
        lock = "SELECT 1 FROM members WHERE conversation_id = $1 AND user_id = $2 FOR UPDATE"
        await admin.execute("SET deadlock_timeout = '60s'")
        tx = await lock_member(admin, cid, second[0].user_id)
        caplog.set_level(logging.INFO, logger="tidings.store.postgres")
        moves = asyncio.ensure_future(
            advance_all(store, cid, [(first[0], first[1], 1, 1), (second[0], second[1], 1, None)])
        )
        await waiting_on_locks(db_url, 1)
        async with asyncio.timeout(WAIT_S):
            await admin.execute(lock, cid, first[0].user_id)  # granted once the batch is aborted
        await tx.rollback()
        outcomes = await moves
        assert [(o.delivered_seq, o.read_seq) for o in outcomes] == [(1, 1), (1, 0)]  # type: ignore[union-attr]
        assert store.cursor_batch_stats.batches == 1
        assert any("rolled back (DeadlockDetectedError)" in r.getMessage() for r in caplog.records)
    finally:
        await store.close()


async def test_close_finishes_the_moves_in_flight(db_url: str, admin: asyncpg.Connection) -> None:
    (store,) = await open_nodes(db_url, 1)
    w = await world(store, users=3)
    cid = w.convs[0].conversation_id
    await store.append(text(cid, w.users[0], w.devices[0], "one"))
    tx = await lock_member(admin, cid, w.users[1].user_id)
    moves = asyncio.ensure_future(
        advance_all(
            store, cid, [(w.users[1], w.devices[1], 1, None), (w.users[2], w.devices[2], 1, 1)]
        )
    )
    await waiting_on_locks(db_url, 1)
    closing = asyncio.ensure_future(store.close())
    await tx.rollback()
    async with asyncio.timeout(WAIT_S):
        await closing
        outcomes = await moves
    assert [(o.delivered_seq, o.read_seq) for o in outcomes] == [(1, 0), (1, 1)]  # type: ignore[union-attr]
    with pytest.raises(TidingsError) as info:
        await store.advance_cursors(cid, w.users[1].user_id, w.devices[1].device_id, 1, 1)
    assert info.value.code is ErrorCode.UNAVAILABLE


async def test_text_postgres_cannot_hold_is_bad_request(db_url: str) -> None:
    """A NUL in an id is refused at the protocol edge; one that reaches the
    store another way is a clear bad_request, not a driver error (internal)."""
    store = PostgresStore(db_url)
    await store.start()
    try:
        with pytest.raises(TidingsError) as raised:
            await store.history("c\x00", 0, None, 10)
        assert raised.value.code is ErrorCode.BAD_REQUEST
        with pytest.raises(TidingsError) as raised:
            await store.get_credentials("bob\x00")
        assert raised.value.code is ErrorCode.BAD_REQUEST
    finally:
        await store.close()
