"""Store conformance, conversations (``ConversationStore``): creation, the
direct-pair rule and membership changes. Run on every engine through
``conftest.py``'s fixtures; every wait is bounded by ``WAIT_S``."""

from __future__ import annotations

import asyncio
from typing import Protocol

from tests.store.support import (
    DIRECT,
    GROUP,
    NOW,
    WAIT_S,
    event,
    expect_error,
    last_seq,
    make_device,
    make_user,
    pair,
    send_many,
    text,
)
from tidings.core.errors import ErrorCode
from tidings.core.models import (
    Role,
)
from tidings.core.ports.store.accounts import AccountStore
from tidings.core.ports.store.conversations import ConversationStore
from tidings.core.ports.store.cursors import CursorStore
from tidings.core.ports.store.messages import MessageLog


class Subject(AccountStore, ConversationStore, MessageLog, CursorStore, Protocol):
    """Conversations, with the users they are between, the events that
    membership changes append and the listings that show them."""


# -- conversations ------------------------------------------------------------------
async def test_direct_conversation_is_unique_per_pair(store: Subject) -> None:
    alice = await make_user(store, "alice")
    bob = await make_user(store, "bob")
    carol = await make_user(store, "carol")
    conv, created = await store.create_conversation(DIRECT, alice.user_id, [bob.user_id], None, NOW)
    assert created is True
    assert conv.kind is DIRECT
    assert conv.last_seq == 0
    assert conv.created_by == alice.user_id
    again, created_again = await store.create_conversation(
        DIRECT, alice.user_id, [bob.user_id], None, NOW
    )
    reverse, created_reverse = await store.create_conversation(
        DIRECT, bob.user_id, [alice.user_id], None, NOW
    )
    assert (again, created_again) == (conv, False)
    assert (reverse, created_reverse) == (conv, False)
    other, created_other = await store.create_conversation(
        DIRECT, alice.user_id, [carol.user_id], None, NOW
    )
    assert created_other is True
    assert other.conversation_id != conv.conversation_id
    members = await store.get_members(conv.conversation_id)
    assert sorted(m.user_id for m in members) == sorted([alice.user_id, bob.user_id])
    assert {m.role for m in members} == {Role.MEMBER}


async def test_concurrent_direct_creation_makes_one(store: Subject) -> None:
    alice = await make_user(store, "alice")
    bob = await make_user(store, "bob")
    async with asyncio.timeout(WAIT_S):
        results = await asyncio.gather(
            *(
                store.create_conversation(DIRECT, a.user_id, [b.user_id], None, NOW)
                for a, b in [(alice, bob), (bob, alice)] * 10
            )
        )
    assert len({conv.conversation_id for conv, _ in results}) == 1
    assert sum(created for _, created in results) == 1


async def test_direct_needs_exactly_one_other(store: Subject) -> None:
    alice = await make_user(store, "alice")
    bob = await make_user(store, "bob")
    carol = await make_user(store, "carol")
    for others in ([], [alice.user_id], [bob.user_id, carol.user_id]):
        await expect_error(
            ErrorCode.BAD_REQUEST,
            store.create_conversation(DIRECT, alice.user_id, others, None, NOW),
        )
    listed, _ = await store.list_conversations(alice.user_id, "d_any")
    assert listed == []


async def test_group_creator_is_admin_and_ids_are_collapsed(store: Subject) -> None:
    alice = await make_user(store, "alice")
    bob = await make_user(store, "bob")
    carol = await make_user(store, "carol")
    conv, created = await store.create_conversation(
        GROUP,
        alice.user_id,
        [bob.user_id, carol.user_id, bob.user_id, alice.user_id],
        "team",
        NOW,
    )
    assert created is True
    assert (conv.kind, conv.title, conv.last_seq, conv.created_at) == (GROUP, "team", 0, NOW)
    assert await store.get_conversation(conv.conversation_id) == conv
    members = await store.get_members(conv.conversation_id)
    assert [m.user_id for m in members] == sorted([alice.user_id, bob.user_id, carol.user_id])
    roles = {m.user_id: m.role for m in members}
    assert roles == {
        alice.user_id: Role.ADMIN,
        bob.user_id: Role.MEMBER,
        carol.user_id: Role.MEMBER,
    }
    assert all(m.delivered_seq == 0 and m.read_seq == 0 for m in members)
    # A creation appends nothing.
    assert await store.history(conv.conversation_id) == []


async def test_group_alone_is_allowed(store: Subject) -> None:
    alice = await make_user(store, "alice")
    conv, created = await store.create_conversation(GROUP, alice.user_id, [], "notes", NOW)
    assert created is True
    assert [m.user_id for m in await store.get_members(conv.conversation_id)] == [alice.user_id]


async def test_unknown_member_is_not_found_and_creates_nothing(store: Subject) -> None:
    alice = await make_user(store, "alice")
    bob = await make_user(store, "bob")
    await expect_error(
        ErrorCode.NOT_FOUND,
        store.create_conversation(GROUP, alice.user_id, [bob.user_id, "u_ghost"], "t", NOW),
    )
    await expect_error(
        ErrorCode.NOT_FOUND,
        store.create_conversation(DIRECT, alice.user_id, ["u_ghost"], None, NOW),
    )
    await expect_error(
        ErrorCode.NOT_FOUND,
        store.create_conversation(GROUP, "u_ghost", [alice.user_id], "t", NOW),
    )
    assert (await store.list_conversations(alice.user_id, "d_any"))[0] == []
    assert (await store.list_conversations(bob.user_id, "d_any"))[0] == []


async def test_unknown_conversation_reads(store: Subject) -> None:
    assert await store.get_conversation("c_unknown") is None
    assert await store.get_members("c_unknown") == []
    assert await store.history("c_unknown") == []


# -- membership changes -------------------------------------------------------------
async def test_add_member_appends_event_at_next_seq(store: Subject) -> None:
    p = await pair(store)
    carol = await make_user(store, "carol")
    c_dev = await make_device(store, carol)
    await send_many(store, p, 3)
    ev = event(p.cid, p.alice, p.a_dev, "add-carol", "member_added")
    result = await store.change_members(p.cid, [carol.user_id], [], ev)
    assert result is not None
    assert result.duplicate is False
    assert result.message.seq == 4
    assert result.message.content == ev.content
    assert result.message.sender_id == p.alice.user_id
    assert await last_seq(store, p.cid) == 4
    members = {m.user_id: m for m in await store.get_members(p.cid)}
    assert set(members) == {p.alice.user_id, p.bob.user_id, carol.user_id}
    assert members[carol.user_id].role is Role.MEMBER
    history = await store.history(p.cid)
    assert [m.seq for m in history] == [1, 2, 3, 4]
    assert history[-1] == result.message
    # The new member can post; the event shows up in their listing.
    posted = await store.append(text(p.cid, carol, c_dev, "carol-1"))
    assert posted.message.seq == 5
    listed, _ = await store.list_conversations(carol.user_id, c_dev.device_id)
    assert [c.conversation_id for c in listed] == [p.cid]


async def test_remove_member(store: Subject) -> None:
    p = await pair(store)
    await send_many(store, p, 2)
    await store.advance_cursors(p.cid, p.bob.user_id, p.b_dev.device_id, 2, 1)
    ev = event(p.cid, p.alice, p.a_dev, "rm-bob", "member_removed")
    result = await store.change_members(p.cid, [], [p.bob.user_id], ev)
    assert result is not None
    assert result.message.seq == 3
    assert [m.user_id for m in await store.get_members(p.cid)] == [p.alice.user_id]
    await expect_error(ErrorCode.NOT_MEMBER, store.append(text(p.cid, p.bob, p.b_dev, "late")))
    await expect_error(
        ErrorCode.NOT_MEMBER,
        store.advance_cursors(p.cid, p.bob.user_id, p.b_dev.device_id, 3, 3),
    )
    assert (await store.list_conversations(p.bob.user_id, p.b_dev.device_id))[0] == []
    # Re-added, Bob starts from fresh cursors (his old rows were deleted).
    back = await store.change_members(
        p.cid, [p.bob.user_id], [], event(p.cid, p.alice, p.a_dev, "re-add", "member_added")
    )
    assert back is not None
    assert back.message.seq == 4
    listed, _ = await store.list_conversations(p.bob.user_id, p.b_dev.device_id)
    assert [(c.delivered_seq, c.read_seq) for c in listed] == [(0, 0)]


async def test_member_change_noop_returns_none(store: Subject) -> None:
    p = await pair(store)
    carol = await make_user(store, "carol")
    await send_many(store, p, 2)
    noop = event(p.cid, p.alice, p.a_dev, "noop", "member_added")
    assert await store.change_members(p.cid, [p.bob.user_id], [carol.user_id], noop) is None
    assert await store.change_members(p.cid, [], [], noop) is None
    assert await last_seq(store, p.cid) == 2
    assert len(await store.get_members(p.cid)) == 2


async def test_member_change_errors_change_nothing(store: Subject) -> None:
    p = await pair(store)
    carol = await make_user(store, "carol")
    ev = event(p.cid, p.alice, p.a_dev, "e1", "member_added")
    await expect_error(
        ErrorCode.NOT_FOUND,
        store.change_members(
            "c_unknown",
            [carol.user_id],
            [],
            event("c_unknown", p.alice, p.a_dev, "e0", "member_added"),
        ),
    )
    await expect_error(
        ErrorCode.NOT_FOUND,
        store.change_members(p.cid, [carol.user_id, "u_ghost"], [], ev),
    )
    await expect_error(ErrorCode.NOT_FOUND, store.change_members(p.cid, [], ["u_ghost"], ev))
    assert len(await store.get_members(p.cid)) == 2
    assert await last_seq(store, p.cid) == 0


async def test_member_change_with_many_users(store: Subject) -> None:
    p = await pair(store)
    async with asyncio.timeout(WAIT_S):
        users = await asyncio.gather(*(make_user(store, f"user{i}") for i in range(300)))
    ev = event(p.cid, p.alice, p.a_dev, "bulk", "member_added")
    result = await store.change_members(p.cid, [u.user_id for u in users], [], ev)
    assert result is not None
    assert len(await store.get_members(p.cid)) == 302
