"""The sync-token floor of the PostgreSQL store is computed once for every
listing that asks while a computation runs (a reconnect herd's hellos and
syncs would otherwise queue on tidings_safe_version's cluster-wide lock)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.services_postgres import PostgresService, create_test_database
from tidings.core.models import ConversationKind
from tidings.store.postgres import PostgresStore

LISTINGS = 50
NOW = 1_700_000_000_000


@pytest.fixture
async def store(postgres_service: PostgresService) -> AsyncIterator[PostgresStore]:
    opened = PostgresStore(await create_test_database())
    await opened.start()
    try:
        yield opened
    finally:
        await opened.close()


async def test_concurrent_listings_share_one_low_water_mark(
    store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = await store.create_user("mark-alice", "x", NOW)
    bob = await store.create_user("mark-bob", "x", NOW)
    conversation, _ = await store.create_conversation(
        ConversationKind.DIRECT, alice.user_id, [bob.user_id], None, NOW
    )
    marks = 0
    fetchrow = store._fetchrow

    async def counting(query: str, *args: object) -> Any:
        nonlocal marks
        if "tidings_safe_version" in query:
            marks += 1
        return await fetchrow(query, *args)

    monkeypatch.setattr(store, "_fetchrow", counting)
    answers = await asyncio.gather(
        *(store.list_conversations(alice.user_id, "d") for _ in range(LISTINGS))
    )
    # Every listing started before the first one's computation came back.
    assert marks == 1
    assert {token for _, token in answers} == {answers[0][1]}
    assert answers[0][1] > 0  # the conversation's creation is committed: the mark covers it
    for states, _ in answers:
        assert [s.conversation_id for s in states] == [conversation.conversation_id]
    # One at a time, each listing computes its own (and so sees every change before it).
    await store.list_conversations(alice.user_id, "d")
    await store.list_conversations(alice.user_id, "d")
    assert marks == 3
