"""Store conformance, the message log (``MessageLog``): appends (seqs, idempotency,
call order, batches) and history. Run on every engine through ``conftest.py``'s
fixtures; concurrency tests check invariants, never timings, and every wait is
bounded by ``WAIT_S``."""

from __future__ import annotations

import asyncio
import json
from typing import Protocol

from tests.store.support import (
    NOW,
    WAIT_S,
    expect_error,
    last_seq,
    make_device,
    make_user,
    pair,
    send_many,
    text,
)
from tidings.core.errors import ErrorCode, TidingsError
from tidings.core.models import (
    AppendResult,
)
from tidings.core.ports.store.accounts import AccountStore
from tidings.core.ports.store.conversations import ConversationStore
from tidings.core.ports.store.cursors import CursorStore
from tidings.core.ports.store.messages import MessageLog


class Subject(AccountStore, ConversationStore, MessageLog, CursorStore, Protocol):
    """The log, with the users and conversations appends need and the cursors
    and listings an append moves."""


# -- append ------------------------------------------------------------------------
async def test_append_assigns_gap_free_seqs(store: Subject) -> None:
    p = await pair(store)
    first = await store.append(text(p.cid, p.alice, p.a_dev, "m1", "one"))
    second = await store.append(text(p.cid, p.bob, p.b_dev, "m2", "two"))
    assert first.duplicate is False
    assert (first.message.seq, second.message.seq) == (1, 2)
    assert first.message.conversation_id == p.cid
    assert first.message.sender_id == p.alice.user_id
    assert first.message.client_msg_id == "m1"
    assert first.message.ts == NOW
    assert json.loads(first.message.content) == {"text": "one"}
    assert first.message.message_id != second.message.message_id
    assert await store.history(p.cid) == [first.message, second.message]
    assert await last_seq(store, p.cid) == 2


async def test_duplicate_returns_original_and_writes_nothing(store: Subject) -> None:
    p = await pair(store)
    original = await store.append(text(p.cid, p.alice, p.a_dev, "same", "first"))
    await store.append(text(p.cid, p.bob, p.b_dev, "other"))
    _, version = await store.list_conversations(p.alice.user_id, p.a_dev.device_id)
    retry = await store.append(text(p.cid, p.alice, p.a_dev, "same", "changed body"))
    assert retry.duplicate is True
    assert retry.message == original.message
    assert await last_seq(store, p.cid) == 2
    assert len(await store.history(p.cid)) == 2
    assert (await store.list_conversations(p.alice.user_id, p.a_dev.device_id))[1] == version
    # The key is (sender, client_msg_id): another sender may reuse the id.
    bob_same = await store.append(text(p.cid, p.bob, p.b_dev, "same"))
    assert (bob_same.duplicate, bob_same.message.seq) == (False, 3)


async def test_append_by_non_member_or_to_unknown_conversation(store: Subject) -> None:
    p = await pair(store)
    mallory = await make_user(store, "mallory")
    m_dev = await make_device(store, mallory)
    await expect_error(ErrorCode.NOT_MEMBER, store.append(text(p.cid, mallory, m_dev, "x")))
    await expect_error(ErrorCode.NOT_MEMBER, store.append(text("c_unknown", p.alice, p.a_dev, "y")))
    assert await last_seq(store, p.cid) == 0
    # The failed attempt did not consume the idempotency key.
    await store.append(text(p.cid, p.alice, p.a_dev, "y"))
    assert await last_seq(store, p.cid) == 1


async def test_append_advances_senders_cursors_only_when_contiguous(store: Subject) -> None:
    p = await pair(store)
    await send_many(store, p, 3, sender=p.bob)
    # Bob wrote 1..3 from a conversation read to the end: his cursors follow.
    # Alice has not been given 1..3: her reply (4) must not move hers past them.
    await store.append(text(p.cid, p.alice, p.a_dev, "reply"))
    members = {m.user_id: m for m in await store.get_members(p.cid)}
    assert (members[p.alice.user_id].delivered_seq, members[p.alice.user_id].read_seq) == (0, 0)
    assert (members[p.bob.user_id].delivered_seq, members[p.bob.user_id].read_seq) == (3, 3)
    # Unread counts what others sent: Bob's 1..3, not Alice's own 4.
    listed, _ = await store.list_conversations(p.alice.user_id, p.a_dev.device_id)
    assert [(c.delivered_seq, c.read_seq, c.unread) for c in listed] == [(0, 0, 3)]
    listed, _ = await store.list_conversations(p.bob.user_id, p.b_dev.device_id)
    assert [(c.delivered_seq, c.read_seq, c.unread) for c in listed] == [(3, 3, 1)]
    # Once Alice has read up to 4, her next message keeps her cursors at the end.
    await store.advance_cursors(p.cid, p.alice.user_id, p.a_dev.device_id, None, 4)
    await store.append(text(p.cid, p.alice, p.a_dev, "again"))
    listed, _ = await store.list_conversations(p.alice.user_id, p.a_dev.device_id)
    assert [(c.delivered_seq, c.read_seq, c.unread) for c in listed] == [(5, 5, 0)]


async def test_cursors_follow_a_burst_as_if_sent_one_by_one(store: Subject) -> None:
    """Appends sent together (one batch, or racing connections) move cursors alike."""
    p = await pair(store)
    await store.append(text(p.cid, p.alice, p.a_dev, "first"))
    async with asyncio.timeout(WAIT_S):
        alices = await asyncio.gather(
            *(store.append(text(p.cid, p.alice, p.a_dev, f"a{i}")) for i in range(5))
        )
        bobs = await asyncio.gather(
            *(store.append(text(p.cid, p.bob, p.b_dev, f"b{i}")) for i in range(3))
        )
    assert sorted(r.message.seq for r in alices) == [2, 3, 4, 5, 6]
    assert sorted(r.message.seq for r in bobs) == [7, 8, 9]
    # Alice's cursors followed each of hers (1 -> 6); Bob was never given 1..6
    # (unread: Alice's six; his own three are not).
    listed, _ = await store.list_conversations(p.alice.user_id, p.a_dev.device_id)
    assert [(c.delivered_seq, c.read_seq, c.unread) for c in listed] == [(6, 6, 3)]
    listed, _ = await store.list_conversations(p.bob.user_id, p.b_dev.device_id)
    # Bob's unread are Alice's six: not his own three.
    assert [(c.delivered_seq, c.read_seq, c.unread) for c in listed] == [(0, 0, 6)]


async def test_appends_take_seqs_in_call_order(store: Subject) -> None:
    """The call-order contract the gateway relies on (core/ports/store.py): appends
    started one after another, each in its own task as the gateway answers a
    burst of sends, get seqs in that order, whether they commit together or
    in several batches."""
    p = await pair(store)
    count = 300
    async with asyncio.timeout(WAIT_S):
        tasks = []
        for i in range(count):
            append = store.append(text(p.cid, p.alice, p.a_dev, f"m{i}"))
            tasks.append(asyncio.create_task(append))
            if i % 7 == 0:
                await asyncio.sleep(0)  # let some batches start mid-burst
        results = await asyncio.gather(*tasks)
    assert [r.message.client_msg_id for r in results] == [f"m{i}" for i in range(count)]
    assert [r.message.seq for r in results] == list(range(1, count + 1))


async def test_concurrent_appends_are_gap_free(store: Subject) -> None:
    p = await pair(store)
    tasks, per_task = 20, 50

    async def writer(task: int) -> list[AppendResult]:
        who, dev = (p.alice, p.a_dev) if task % 2 else (p.bob, p.b_dev)
        return [await store.append(text(p.cid, who, dev, f"t{task}-m{i}")) for i in range(per_task)]

    async with asyncio.timeout(WAIT_S):
        results = await asyncio.gather(*(writer(t) for t in range(tasks)))
    seqs = sorted(r.message.seq for rs in results for r in rs)
    assert seqs == list(range(1, tasks * per_task + 1))
    for rs in results:  # each writer's own messages are in the order it sent them
        assert [r.message.seq for r in rs] == sorted(r.message.seq for r in rs)
    assert await last_seq(store, p.cid) == tasks * per_task
    history = await store.history(p.cid, limit=tasks * per_task)
    assert [m.seq for m in history] == seqs


async def test_concurrent_duplicates_store_one(store: Subject) -> None:
    p = await pair(store)
    async with asyncio.timeout(WAIT_S):
        results = await asyncio.gather(
            *(store.append(text(p.cid, p.alice, p.a_dev, "retry-me")) for _ in range(50))
        )
    assert sum(not r.duplicate for r in results) == 1
    assert {r.message.message_id for r in results} == {results[0].message.message_id}
    assert {r.message.seq for r in results} == {1}
    assert await last_seq(store, p.cid) == 1


async def test_failing_writes_do_not_affect_others_in_a_batch(store: Subject) -> None:
    p = await pair(store)
    mallory = await make_user(store, "mallory")
    m_dev = await make_device(store, mallory)
    attempts = [
        text(p.cid, mallory, m_dev, f"bad-{i}")
        if i % 3 == 0
        else text(p.cid, p.alice, p.a_dev, f"ok-{i}")
        for i in range(300)
    ]
    async with asyncio.timeout(WAIT_S):
        outcomes = await asyncio.gather(
            *(store.append(m) for m in attempts), return_exceptions=True
        )
    good: list[AppendResult] = []
    for attempt, outcome in zip(attempts, outcomes, strict=True):
        if attempt.sender_id == mallory.user_id:
            assert isinstance(outcome, TidingsError)
            assert outcome.code is ErrorCode.NOT_MEMBER
        else:
            assert isinstance(outcome, AppendResult), outcome
            good.append(outcome)
    assert sorted(r.message.seq for r in good) == list(range(1, 201))
    assert await last_seq(store, p.cid) == 200


# -- history ----------------------------------------------------------------------------
async def test_history_windows(store: Subject) -> None:
    p = await pair(store)
    await send_many(store, p, 10)

    async def seqs(**kwargs: int | bool | None) -> list[int]:
        after = kwargs.get("after_seq", 0)
        before = kwargs.get("before_seq")
        limit = kwargs.get("limit", 100)
        newest = kwargs.get("newest_first", False)
        assert isinstance(after, int)
        assert before is None or isinstance(before, int)
        assert isinstance(limit, int)
        messages = await store.history(p.cid, after, before, limit, bool(newest))
        return [m.seq for m in messages]

    assert await seqs() == list(range(1, 11))
    assert await seqs(after_seq=7) == [8, 9, 10]
    assert await seqs(after_seq=10) == []
    assert await seqs(before_seq=4) == [1, 2, 3]
    assert await seqs(after_seq=2, before_seq=6) == [3, 4, 5]
    assert await seqs(limit=3) == [1, 2, 3]
    assert await seqs(limit=3, newest_first=True) == [8, 9, 10]
    assert await seqs(before_seq=6, limit=2, newest_first=True) == [4, 5]
    assert await seqs(after_seq=3, before_seq=6, limit=10, newest_first=True) == [4, 5]
    assert await seqs(limit=0) == []
