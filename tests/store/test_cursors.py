"""Store conformance, cursors (``CursorStore``): forward-only moves, listings,
sync tokens and receipt counts. Run on every engine through ``conftest.py``'s
fixtures; concurrency tests check invariants, never timings, and every wait is
bounded by ``WAIT_S``."""

from __future__ import annotations

import asyncio
import itertools
import random
from typing import Protocol

from tests.store.support import (
    DIRECT,
    GROUP,
    NOW,
    WAIT_S,
    event,
    expect_error,
    make_device,
    make_user,
    pair,
    send_many,
    text,
)
from tidings.core.errors import ErrorCode, TidingsError
from tidings.core.ports.store.accounts import AccountStore
from tidings.core.ports.store.conversations import ConversationStore
from tidings.core.ports.store.cursors import CursorStore
from tidings.core.ports.store.messages import MessageLog


class Subject(AccountStore, ConversationStore, MessageLog, CursorStore, Protocol):
    """Cursors, with the users, conversations and messages they point into."""


# -- cursors ------------------------------------------------------------------------
async def test_cursors_move_forward_only_and_clamp(store: Subject) -> None:
    p = await pair(store)
    await send_many(store, p, 10)
    bob, dev = p.bob.user_id, p.b_dev.device_id
    state = await store.advance_cursors(p.cid, bob, dev, 5, None)
    assert (state.delivered_seq, state.read_seq, state.moved) == (5, 0, True)
    assert (state.conversation_id, state.user_id) == (p.cid, bob)
    # Out of order: an older ack changes nothing.
    state = await store.advance_cursors(p.cid, bob, dev, 3, None)
    assert (state.delivered_seq, state.read_seq, state.moved) == (5, 0, False)
    # Beyond last_seq: clamped.
    state = await store.advance_cursors(p.cid, bob, dev, 1000, None)
    assert (state.delivered_seq, state.read_seq, state.moved) == (10, 0, True)
    state = await store.advance_cursors(p.cid, bob, dev, None, 1000)
    assert (state.delivered_seq, state.read_seq, state.moved) == (10, 10, True)
    state = await store.advance_cursors(p.cid, bob, dev, None, None)
    assert (state.delivered_seq, state.read_seq, state.moved) == (10, 10, False)
    members = {m.user_id: m for m in await store.get_members(p.cid)}
    assert (members[bob].delivered_seq, members[bob].read_seq) == (10, 10)


async def test_read_implies_delivered(store: Subject) -> None:
    p = await pair(store)
    await send_many(store, p, 6)
    state = await store.advance_cursors(p.cid, p.bob.user_id, p.b_dev.device_id, 2, 4)
    assert (state.delivered_seq, state.read_seq) == (4, 4)
    state = await store.advance_cursors(p.cid, p.bob.user_id, p.b_dev.device_id, None, 5)
    assert (state.delivered_seq, state.read_seq) == (5, 5)
    listed, _ = await store.list_conversations(p.bob.user_id, p.b_dev.device_id)
    assert [(c.delivered_seq, c.read_seq) for c in listed] == [(5, 5)]


async def test_cursors_across_devices(store: Subject) -> None:
    p = await pair(store)
    tablet = await make_device(store, p.bob, "tablet")
    await send_many(store, p, 8)
    bob = p.bob.user_id
    await store.advance_cursors(p.cid, bob, p.b_dev.device_id, 6, None)
    state = await store.advance_cursors(p.cid, bob, tablet.device_id, 3, 2)
    # The member's cursors are the max over devices; moved reports the member.
    assert (state.delivered_seq, state.read_seq, state.moved) == (6, 2, True)
    state = await store.advance_cursors(p.cid, bob, tablet.device_id, 5, None)
    assert (state.delivered_seq, state.read_seq, state.moved) == (6, 2, False)
    # Each device resumes its sync from its own delivered cursor; read is the user's.
    phone_view, _ = await store.list_conversations(bob, p.b_dev.device_id)
    tablet_view, _ = await store.list_conversations(bob, tablet.device_id)
    fresh_view, _ = await store.list_conversations(bob, "d_never_synced")
    assert [(c.delivered_seq, c.read_seq) for c in phone_view] == [(6, 2)]
    assert [(c.delivered_seq, c.read_seq) for c in tablet_view] == [(5, 2)]
    assert [(c.delivered_seq, c.read_seq) for c in fresh_view] == [(0, 2)]


async def test_cursor_of_non_member(store: Subject) -> None:
    p = await pair(store)
    mallory = await make_user(store, "mallory")
    await expect_error(
        ErrorCode.NOT_MEMBER, store.advance_cursors(p.cid, mallory.user_id, "d_x", 1, 1)
    )
    await expect_error(
        ErrorCode.NOT_MEMBER, store.advance_cursors("c_unknown", p.bob.user_id, "d_x", 1, 1)
    )


async def test_concurrent_cursor_updates_keep_the_max(store: Subject) -> None:
    p = await pair(store)
    await send_many(store, p, 100)
    order = list(range(100, 0, -1)) + list(range(1, 101))
    async with asyncio.timeout(WAIT_S):
        await asyncio.gather(
            *(
                store.advance_cursors(p.cid, p.bob.user_id, p.b_dev.device_id, s, s // 2)
                for s in order
            )
        )
    members = {m.user_id: m for m in await store.get_members(p.cid)}
    assert (members[p.bob.user_id].delivered_seq, members[p.bob.user_id].read_seq) == (100, 50)


class CursorMoveCase:
    """One ``advance_cursors`` call of the concurrency test and what it must come to."""

    def __init__(
        self, cid: str, user_id: str, device_id: str, delivered: int | None, read: int | None
    ) -> None:
        self.cid, self.user_id, self.device_id = cid, user_id, device_id
        self.delivered, self.read = delivered, read

    def wanted(self, last: int) -> tuple[int, int]:
        """(delivered, read) this call asks for, clamped; read implies delivered."""
        read = max(0, min(self.read or 0, last))
        return max(read, min(self.delivered or 0, last)), read


def is_chain(states: list[tuple[int, int]]) -> bool:
    """Every two states are ordered componentwise (snapshots of a monotone cursor)."""
    ordered = sorted(states)
    return all(a[1] <= b[1] for a, b in itertools.pairwise(ordered))


async def test_many_concurrent_cursor_moves(store: Subject) -> None:
    """Hundreds of moves at once over several conversations, members and
    devices, with repeated keys and a non-member among them: each call gets
    its own outcome, the results are consistent snapshots, and the final
    cursors are the maxima (however a backend groups the calls)."""
    author = await make_user(store, "author")
    a_dev = await make_device(store, author)
    users = [await make_user(store, f"user{i}") for i in range(4)]
    devices = {
        u.user_id: [await make_device(store, u, n) for n in ("phone", "laptop")] for u in users
    }
    mallory = await make_user(store, "mallory")
    last: dict[str, int] = {}
    for i, count in enumerate((20, 35, 50)):
        conv, _ = await store.create_conversation(
            GROUP, author.user_id, [u.user_id for u in users], f"g{i}", NOW
        )
        for n in range(count):
            await store.append(text(conv.conversation_id, author, a_dev, f"{i}-{n}"))
        last[conv.conversation_id] = count
    rng = random.Random(7)
    cases: list[CursorMoveCase] = []
    for i in range(320):
        cid = rng.choice(sorted(last))
        if i % 64 == 5:
            cases.append(CursorMoveCase(cid, mallory.user_id, "d_mallory", 3, 1))
            continue
        user = rng.choice(users)
        device = rng.choice(devices[user.user_id])
        seqs = [None, *range(0, last[cid] + 10)]
        cases.append(
            CursorMoveCase(cid, user.user_id, device.device_id, rng.choice(seqs), rng.choice(seqs))
        )

    async with asyncio.timeout(WAIT_S):
        outcomes = await asyncio.gather(
            *(
                store.advance_cursors(c.cid, c.user_id, c.device_id, c.delivered, c.read)
                for c in cases
            ),
            return_exceptions=True,
        )

    final: dict[tuple[str, str], tuple[int, int]] = {}
    device_final: dict[tuple[str, str], int] = {}
    for case in cases:
        if case.user_id == mallory.user_id:
            continue
        want = case.wanted(last[case.cid])
        old = final.get((case.cid, case.user_id), (0, 0))
        final[(case.cid, case.user_id)] = (max(old[0], want[0]), max(old[1], want[1]))
        key = (case.cid, case.device_id)
        device_final[key] = max(device_final.get(key, 0), want[0])

    states: dict[tuple[str, str], list[tuple[int, int]]] = {}
    moved: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for case, outcome in zip(cases, outcomes, strict=True):
        if case.user_id == mallory.user_id:
            assert isinstance(outcome, TidingsError), outcome
            assert outcome.code is ErrorCode.NOT_MEMBER
            continue
        assert not isinstance(outcome, BaseException), outcome
        assert (outcome.conversation_id, outcome.user_id) == (case.cid, case.user_id)
        state = (outcome.delivered_seq, outcome.read_seq)
        want = case.wanted(last[case.cid])
        top = final[(case.cid, case.user_id)]
        assert want[0] <= state[0] <= top[0], (case, state)
        assert want[1] <= state[1] <= top[1], (case, state)
        states.setdefault((case.cid, case.user_id), []).append(state)
        if outcome.moved:
            moved.setdefault((case.cid, case.user_id), []).append(state)

    for key, seen in states.items():
        assert is_chain(seen), (key, seen)
        steps = moved.get(key, [])
        assert len(set(steps)) == len(steps), (key, steps)  # each move is a new state
        if final[key] != (0, 0):
            assert final[key] in steps, (key, steps)
    for cid in last:
        members = {m.user_id: m for m in await store.get_members(cid)}
        for user in users:
            expected = final.get((cid, user.user_id), (0, 0))
            got = members[user.user_id]
            assert (got.delivered_seq, got.read_seq) == expected, (cid, user.user_id)
            for device in devices[user.user_id]:
                listed, _ = await store.list_conversations(user.user_id, device.device_id)
                by_conv = {c.conversation_id: c.delivered_seq for c in listed}
                assert by_conv[cid] == device_final.get((cid, device.device_id), 0)


async def test_cursor_moves_with_odd_input(store: Subject) -> None:
    """Absurd seqs are clamped like any other; an id no row can have (a NUL
    character) names no membership: each gets the ordinary answer."""
    p = await pair(store)
    await send_many(store, p, 4)
    bob, dev = p.bob.user_id, p.b_dev.device_id
    state = await store.advance_cursors(p.cid, bob, dev, -5, -1)
    assert (state.delivered_seq, state.read_seq, state.moved) == (0, 0, False)
    state = await store.advance_cursors(p.cid, bob, dev, 2**70, None)
    assert (state.delivered_seq, state.read_seq, state.moved) == (4, 0, True)
    await expect_error(ErrorCode.NOT_MEMBER, store.advance_cursors(p.cid + "\x00", bob, dev, 1, 1))
    await expect_error(ErrorCode.NOT_MEMBER, store.advance_cursors(p.cid, bob + "\x00", dev, 1, 1))


# -- listings and sync tokens ---------------------------------------------------------------
async def test_listing_and_unread(store: Subject) -> None:
    p = await pair(store)
    await send_many(store, p, 5)
    listed, version = await store.list_conversations(p.bob.user_id, p.b_dev.device_id)
    assert len(listed) == 1
    state = listed[0]
    assert (state.conversation_id, state.kind, state.title) == (p.cid, GROUP, "team")
    assert (state.last_seq, state.delivered_seq, state.read_seq, state.unread) == (5, 0, 0, 5)
    assert version >= state.version > 0
    await store.advance_cursors(p.cid, p.bob.user_id, p.b_dev.device_id, 5, 3)
    listed, _ = await store.list_conversations(p.bob.user_id, p.b_dev.device_id)
    assert [(c.delivered_seq, c.read_seq, c.unread) for c in listed] == [(5, 3, 2)]


async def test_new_conversation_is_a_change(store: Subject) -> None:
    alice = await make_user(store, "alice")
    bob = await make_user(store, "bob")
    _, token = await store.list_conversations(bob.user_id, "d_bob")
    conv, _ = await store.create_conversation(DIRECT, alice.user_id, [bob.user_id], None, NOW)
    changed, new_token = await store.list_conversations(bob.user_id, "d_bob", token)
    assert [c.conversation_id for c in changed] == [conv.conversation_id]
    assert changed[0].last_seq == 0
    assert new_token > token
    assert (await store.list_conversations(bob.user_id, "d_bob", new_token))[0] == []


async def test_sync_token_returns_only_what_changed(store: Subject) -> None:
    alice = await make_user(store, "alice")
    bob = await make_user(store, "bob")
    a_dev = await make_device(store, alice)
    count = 2000
    async with asyncio.timeout(WAIT_S):
        created = await asyncio.gather(
            *(
                store.create_conversation(GROUP, alice.user_id, [bob.user_id], f"g{i}", NOW)
                for i in range(count)
            )
        )
    convs = [conv for conv, _ in created]
    everything, token = await store.list_conversations(bob.user_id, "d_bob")
    assert len(everything) == count
    versions = [c.version for c in everything]
    assert versions == sorted(versions)
    assert token >= versions[-1]
    # Three change (in this order); exactly those come back, ordered by version.
    for conv in (convs[1500], convs[7], convs[999]):
        await store.append(text(conv.conversation_id, alice, a_dev, f"x-{conv.conversation_id}"))
    changed, new_token = await store.list_conversations(bob.user_id, "d_bob", token)
    assert [c.conversation_id for c in changed] == [
        convs[1500].conversation_id,
        convs[7].conversation_id,
        convs[999].conversation_id,
    ]
    assert [c.unread for c in changed] == [1, 1, 1]
    assert new_token >= changed[-1].version > token
    # A duplicate changes nothing, so the token stays quiet.
    await store.append(
        text(convs[7].conversation_id, alice, a_dev, f"x-{convs[7].conversation_id}")
    )
    assert await store.list_conversations(bob.user_id, "d_bob", new_token) == ([], new_token)


# -- receipts ---------------------------------------------------------------------------
async def test_receipt_counts(store: Subject) -> None:
    p = await pair(store)
    carol = await make_user(store, "carol")
    await store.change_members(
        p.cid, [carol.user_id], [], event(p.cid, p.alice, p.a_dev, "add", "member_added")
    )
    await send_many(store, p, 4)  # seqs 2..5, Alice's cursors reach 5
    await store.advance_cursors(p.cid, p.bob.user_id, p.b_dev.device_id, 4, 3)
    await store.advance_cursors(p.cid, carol.user_id, "d_carol", 2, None)
    counts = await store.receipt_counts(p.cid, 3)
    assert (counts.conversation_id, counts.seq) == (p.cid, 3)
    assert (counts.delivered_count, counts.read_count, counts.members) == (2, 2, 3)
    counts = await store.receipt_counts(p.cid, 5)
    assert (counts.delivered_count, counts.read_count, counts.members) == (1, 1, 3)
    counts = await store.receipt_counts(p.cid, 1)
    assert (counts.delivered_count, counts.read_count, counts.members) == (3, 2, 3)
    empty = await store.receipt_counts("c_unknown", 1)
    assert (empty.delivered_count, empty.read_count, empty.members) == (0, 0, 0)
