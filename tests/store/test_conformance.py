"""The store conformance suite: every ``Store`` backend passes it unchanged.

Tests talk only to the ``Store`` protocol (``tidings.core.ports.store``) through the
``store`` / ``open_store`` fixtures of ``conftest.py``, which run each test on
every registered backend with a fresh, empty database. Concurrency tests fire
many coroutines at once and check invariants (gap-free seqs, one copy per
idempotency key), never timings. Every wait is bounded by ``WAIT_S``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
from collections.abc import Awaitable, Callable

import pytest

from tidings.core.errors import ErrorCode, TidingsError
from tidings.core.models import (
    AppendResult,
    Conversation,
    ConversationKind,
    Device,
    NewMessage,
    ReconcileGap,
    ReconcileReport,
    Role,
    User,
)
from tidings.core.ports.store.composite import Store

StoreOpener = Callable[[], Awaitable[Store]]

WAIT_S = 60.0
"""Upper bound for any wait in a test: far above what a healthy backend needs
even for the 2,000-conversation test on a slow CI machine, so it only turns a
hang into a failure."""

NOW = 1_700_000_000_000
GROUP = ConversationKind.GROUP
DIRECT = ConversationKind.DIRECT


# -- helpers ---------------------------------------------------------------------
async def make_user(store: Store, name: str) -> User:
    return await store.create_user(name, f"hash-of-{name}", NOW)


async def make_device(store: Store, user: User, name: str = "phone") -> Device:
    return await store.create_device(user.user_id, name, f"token-{user.user_id}-{name}", NOW)


def text(
    cid: str, sender: User, device: Device, client_msg_id: str, body: str = "hi"
) -> NewMessage:
    content = json.dumps({"text": body}).encode()
    return NewMessage(cid, sender.user_id, device.device_id, client_msg_id, content, NOW)


def event(cid: str, sender: User, device: Device, client_msg_id: str, kind: str) -> NewMessage:
    content = json.dumps({"kind": kind}).encode()
    return NewMessage(cid, sender.user_id, device.device_id, client_msg_id, content, NOW)


async def expect_error(code: ErrorCode, awaitable: Awaitable[object]) -> None:
    with pytest.raises(TidingsError) as info:
        async with asyncio.timeout(WAIT_S):
            await awaitable
    assert info.value.code is code, info.value


class Pair:
    """Alice and Bob, one device each, sharing a group (Alice admin)."""

    def __init__(self, alice: User, bob: User, a_dev: Device, b_dev: Device, conv: Conversation):
        self.alice, self.bob, self.a_dev, self.b_dev, self.conv = alice, bob, a_dev, b_dev, conv

    @property
    def cid(self) -> str:
        return self.conv.conversation_id


async def pair(store: Store) -> Pair:
    alice = await make_user(store, "alice")
    bob = await make_user(store, "bob")
    a_dev = await make_device(store, alice)
    b_dev = await make_device(store, bob)
    conv, _ = await store.create_conversation(GROUP, alice.user_id, [bob.user_id], "team", NOW)
    return Pair(alice, bob, a_dev, b_dev, conv)


async def send_many(store: Store, p: Pair, count: int, sender: User | None = None) -> None:
    who = sender or p.alice
    dev = p.a_dev if who == p.alice else p.b_dev
    for i in range(count):
        await store.append(text(p.cid, who, dev, f"{who.user_id}-seq-{i}"))


async def last_seq(store: Store, cid: str) -> int:
    conv = await store.get_conversation(cid)
    assert conv is not None
    return conv.last_seq


# -- lifecycle -------------------------------------------------------------------
async def test_ping_and_epoch(store: Store) -> None:
    await store.ping()
    assert isinstance(store.epoch, str)
    assert store.epoch


async def test_epoch_and_data_persist_across_reopen(open_store: StoreOpener) -> None:
    first = await open_store()
    try:
        epoch = first.epoch
        alice = await make_user(first, "alice")
    finally:
        await first.close()
    second = await open_store()
    try:
        assert second.epoch == epoch
        assert await second.get_user(alice.user_id) == alice
    finally:
        await second.close()


# -- accounts ---------------------------------------------------------------------
async def test_create_and_get_user(store: Store) -> None:
    alice = await make_user(store, "Alice")
    assert alice.username == "Alice"
    assert alice.created_at == NOW
    assert await store.get_user(alice.user_id) == alice
    assert await store.get_user("u_unknown") is None


async def test_username_conflict_is_case_insensitive(store: Store) -> None:
    alice = await make_user(store, "Alice")
    await expect_error(ErrorCode.CONFLICT, store.create_user("alice", "x", NOW))
    await expect_error(ErrorCode.CONFLICT, store.create_user("ALICE", "x", NOW))
    creds = await store.get_credentials("aLiCe")
    assert creds is not None
    assert creds.user == alice
    assert creds.password_hash == "hash-of-Alice"
    assert await store.get_credentials("nobody") is None


async def test_devices_tokens_and_revocation(store: Store) -> None:
    alice = await make_user(store, "alice")
    phone = await store.create_device(alice.user_id, "phone", "hash-1", NOW)
    laptop = await store.create_device(alice.user_id, "laptop", "hash-2", NOW)
    assert phone.device_id != laptop.device_id
    assert (phone.user_id, phone.name, phone.created_at) == (alice.user_id, "phone", NOW)
    assert await store.device_for_token("hash-1") == phone
    assert await store.device_for_token("hash-2") == laptop
    assert await store.device_for_token("hash-3") is None
    assert await store.revoke_device(phone.device_id) is True
    assert await store.device_for_token("hash-1") is None
    assert await store.device_for_token("hash-2") == laptop
    assert await store.revoke_device(phone.device_id) is False
    assert await store.revoke_device("d_unknown") is False


async def test_device_of_unknown_user_is_not_found(store: Store) -> None:
    await expect_error(ErrorCode.NOT_FOUND, store.create_device("u_unknown", "x", "h", NOW))
    assert await store.device_for_token("h") is None


async def test_accounts_are_listed_in_case_insensitive_name_order_by_page(store: Store) -> None:
    names = ["bob", "Alice", "a_b", "a.b", "A-c", "zed"]
    users = {name: await make_user(store, name) for name in names}
    await make_device(store, users["bob"], "phone")
    await make_device(store, users["bob"], "laptop")
    first = await store.list_accounts(limit=4)
    rest = await store.list_accounts(first[-1].user.username, limit=4)
    order = [a.user.username for a in [*first, *rest]]
    assert order == sorted(names, key=str.lower)
    assert len(first) == 4
    accounts = {a.user.username: a for a in [*first, *rest]}
    assert accounts["bob"].live_devices == 2
    assert accounts["zed"].live_devices == 0
    assert accounts["bob"].user == users["bob"]
    assert all(a.disabled_at is None for a in accounts.values())
    assert await store.list_accounts("zed") == []


async def test_disabling_revokes_tokens_and_refuses_new_devices(store: Store) -> None:
    alice = await make_user(store, "alice")
    await store.create_device(alice.user_id, "phone", "hash-1", NOW)
    assert await store.set_disabled(alice.user_id, True, NOW + 1) is True
    assert await store.set_disabled(alice.user_id, True, NOW + 2) is False
    assert await store.device_for_token("hash-1") is None
    creds = await store.get_credentials("alice")
    assert creds is not None
    assert creds.disabled is True
    await expect_error(
        ErrorCode.FORBIDDEN, store.create_device(alice.user_id, "laptop", "hash-2", NOW)
    )
    assert await store.device_for_token("hash-2") is None
    [account] = await store.list_accounts()
    assert (account.disabled_at, account.live_devices) == (NOW + 1, 0)

    assert await store.set_disabled(alice.user_id, False, NOW + 3) is True
    creds = await store.get_credentials("alice")
    assert creds is not None
    assert creds.disabled is False
    await store.create_device(alice.user_id, "laptop", "hash-2", NOW)
    assert await store.device_for_token("hash-2") is not None
    assert await store.device_for_token("hash-1") is None  # re-enabling revives no token
    await expect_error(ErrorCode.NOT_FOUND, store.set_disabled("u_unknown", True, NOW))


async def test_password_reset_revokes_every_token(store: Store) -> None:
    alice = await make_user(store, "alice")
    bob = await make_user(store, "bob")
    await store.create_device(alice.user_id, "phone", "hash-1", NOW)
    await store.create_device(alice.user_id, "laptop", "hash-2", NOW)
    await store.create_device(bob.user_id, "phone", "hash-3", NOW)
    assert await store.set_password_hash(alice.user_id, "new-hash", NOW + 1) == 2
    creds = await store.get_credentials("alice")
    assert creds is not None
    assert creds.password_hash == "new-hash"
    assert await store.device_for_token("hash-1") is None
    assert await store.device_for_token("hash-2") is None
    assert await store.device_for_token("hash-3") is not None
    assert await store.set_password_hash(alice.user_id, "newer-hash", NOW + 2) == 0
    await expect_error(ErrorCode.NOT_FOUND, store.set_password_hash("u_unknown", "h", NOW))


async def test_a_login_racing_a_disable_leaves_no_live_token(store: Store) -> None:
    alice = await make_user(store, "alice")
    hashes = [f"race-{i}" for i in range(20)]
    refusals: list[ErrorCode] = []

    async def login(token_hash: str) -> None:
        try:
            await store.create_device(alice.user_id, "phone", token_hash, NOW)
        except TidingsError as exc:
            refusals.append(exc.code)

    await asyncio.wait_for(
        asyncio.gather(
            *(login(h) for h in hashes[:10]),
            store.set_disabled(alice.user_id, True, NOW),
            *(login(h) for h in hashes[10:]),
        ),
        WAIT_S,
    )
    assert set(refusals) <= {ErrorCode.FORBIDDEN}
    for token_hash in hashes:
        assert await store.device_for_token(token_hash) is None


# -- conversations ------------------------------------------------------------------
async def test_direct_conversation_is_unique_per_pair(store: Store) -> None:
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


async def test_concurrent_direct_creation_makes_one(store: Store) -> None:
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


async def test_direct_needs_exactly_one_other(store: Store) -> None:
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


async def test_group_creator_is_admin_and_ids_are_collapsed(store: Store) -> None:
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


async def test_group_alone_is_allowed(store: Store) -> None:
    alice = await make_user(store, "alice")
    conv, created = await store.create_conversation(GROUP, alice.user_id, [], "notes", NOW)
    assert created is True
    assert [m.user_id for m in await store.get_members(conv.conversation_id)] == [alice.user_id]


async def test_unknown_member_is_not_found_and_creates_nothing(store: Store) -> None:
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


async def test_unknown_conversation_reads(store: Store) -> None:
    assert await store.get_conversation("c_unknown") is None
    assert await store.get_members("c_unknown") == []
    assert await store.history("c_unknown") == []


# -- membership changes -------------------------------------------------------------
async def test_add_member_appends_event_at_next_seq(store: Store) -> None:
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


async def test_remove_member(store: Store) -> None:
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


async def test_member_change_noop_returns_none(store: Store) -> None:
    p = await pair(store)
    carol = await make_user(store, "carol")
    await send_many(store, p, 2)
    noop = event(p.cid, p.alice, p.a_dev, "noop", "member_added")
    assert await store.change_members(p.cid, [p.bob.user_id], [carol.user_id], noop) is None
    assert await store.change_members(p.cid, [], [], noop) is None
    assert await last_seq(store, p.cid) == 2
    assert len(await store.get_members(p.cid)) == 2


async def test_member_change_errors_change_nothing(store: Store) -> None:
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


async def test_member_change_with_many_users(store: Store) -> None:
    p = await pair(store)
    async with asyncio.timeout(WAIT_S):
        users = await asyncio.gather(*(make_user(store, f"user{i}") for i in range(300)))
    ev = event(p.cid, p.alice, p.a_dev, "bulk", "member_added")
    result = await store.change_members(p.cid, [u.user_id for u in users], [], ev)
    assert result is not None
    assert len(await store.get_members(p.cid)) == 302


# -- append ------------------------------------------------------------------------
async def test_append_assigns_gap_free_seqs(store: Store) -> None:
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


async def test_duplicate_returns_original_and_writes_nothing(store: Store) -> None:
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


async def test_append_by_non_member_or_to_unknown_conversation(store: Store) -> None:
    p = await pair(store)
    mallory = await make_user(store, "mallory")
    m_dev = await make_device(store, mallory)
    await expect_error(ErrorCode.NOT_MEMBER, store.append(text(p.cid, mallory, m_dev, "x")))
    await expect_error(ErrorCode.NOT_MEMBER, store.append(text("c_unknown", p.alice, p.a_dev, "y")))
    assert await last_seq(store, p.cid) == 0
    # The failed attempt did not consume the idempotency key.
    await store.append(text(p.cid, p.alice, p.a_dev, "y"))
    assert await last_seq(store, p.cid) == 1


async def test_append_advances_senders_cursors_only_when_contiguous(store: Store) -> None:
    p = await pair(store)
    await send_many(store, p, 3, sender=p.bob)
    # Bob wrote 1..3 from a conversation read to the end: his cursors follow.
    # Alice has not been given 1..3: her reply (4) must not move hers past them.
    await store.append(text(p.cid, p.alice, p.a_dev, "reply"))
    members = {m.user_id: m for m in await store.get_members(p.cid)}
    assert (members[p.alice.user_id].delivered_seq, members[p.alice.user_id].read_seq) == (0, 0)
    assert (members[p.bob.user_id].delivered_seq, members[p.bob.user_id].read_seq) == (3, 3)
    listed, _ = await store.list_conversations(p.alice.user_id, p.a_dev.device_id)
    assert [(c.delivered_seq, c.read_seq, c.unread) for c in listed] == [(0, 0, 4)]
    listed, _ = await store.list_conversations(p.bob.user_id, p.b_dev.device_id)
    assert [(c.delivered_seq, c.read_seq, c.unread) for c in listed] == [(3, 3, 1)]
    # Once Alice has read up to 4, her next message keeps her cursors at the end.
    await store.advance_cursors(p.cid, p.alice.user_id, p.a_dev.device_id, None, 4)
    await store.append(text(p.cid, p.alice, p.a_dev, "again"))
    listed, _ = await store.list_conversations(p.alice.user_id, p.a_dev.device_id)
    assert [(c.delivered_seq, c.read_seq, c.unread) for c in listed] == [(5, 5, 0)]


async def test_cursors_follow_a_burst_as_if_sent_one_by_one(store: Store) -> None:
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
    # Alice's cursors followed each of hers (1 -> 6); Bob was never given 1..6.
    listed, _ = await store.list_conversations(p.alice.user_id, p.a_dev.device_id)
    assert [(c.delivered_seq, c.read_seq, c.unread) for c in listed] == [(6, 6, 3)]
    listed, _ = await store.list_conversations(p.bob.user_id, p.b_dev.device_id)
    assert [(c.delivered_seq, c.read_seq, c.unread) for c in listed] == [(0, 0, 9)]


async def test_appends_take_seqs_in_call_order(store: Store) -> None:
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


async def test_concurrent_appends_are_gap_free(store: Store) -> None:
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


async def test_concurrent_duplicates_store_one(store: Store) -> None:
    p = await pair(store)
    async with asyncio.timeout(WAIT_S):
        results = await asyncio.gather(
            *(store.append(text(p.cid, p.alice, p.a_dev, "retry-me")) for _ in range(50))
        )
    assert sum(not r.duplicate for r in results) == 1
    assert {r.message.message_id for r in results} == {results[0].message.message_id}
    assert {r.message.seq for r in results} == {1}
    assert await last_seq(store, p.cid) == 1


async def test_failing_writes_do_not_affect_others_in_a_batch(store: Store) -> None:
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
async def test_history_windows(store: Store) -> None:
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


# -- cursors ------------------------------------------------------------------------
async def test_cursors_move_forward_only_and_clamp(store: Store) -> None:
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


async def test_read_implies_delivered(store: Store) -> None:
    p = await pair(store)
    await send_many(store, p, 6)
    state = await store.advance_cursors(p.cid, p.bob.user_id, p.b_dev.device_id, 2, 4)
    assert (state.delivered_seq, state.read_seq) == (4, 4)
    state = await store.advance_cursors(p.cid, p.bob.user_id, p.b_dev.device_id, None, 5)
    assert (state.delivered_seq, state.read_seq) == (5, 5)
    listed, _ = await store.list_conversations(p.bob.user_id, p.b_dev.device_id)
    assert [(c.delivered_seq, c.read_seq) for c in listed] == [(5, 5)]


async def test_cursors_across_devices(store: Store) -> None:
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


async def test_cursor_of_non_member(store: Store) -> None:
    p = await pair(store)
    mallory = await make_user(store, "mallory")
    await expect_error(
        ErrorCode.NOT_MEMBER, store.advance_cursors(p.cid, mallory.user_id, "d_x", 1, 1)
    )
    await expect_error(
        ErrorCode.NOT_MEMBER, store.advance_cursors("c_unknown", p.bob.user_id, "d_x", 1, 1)
    )


async def test_concurrent_cursor_updates_keep_the_max(store: Store) -> None:
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


async def test_many_concurrent_cursor_moves(store: Store) -> None:
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


async def test_cursor_moves_with_odd_input(store: Store) -> None:
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
async def test_listing_and_unread(store: Store) -> None:
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


async def test_new_conversation_is_a_change(store: Store) -> None:
    alice = await make_user(store, "alice")
    bob = await make_user(store, "bob")
    _, token = await store.list_conversations(bob.user_id, "d_bob")
    conv, _ = await store.create_conversation(DIRECT, alice.user_id, [bob.user_id], None, NOW)
    changed, new_token = await store.list_conversations(bob.user_id, "d_bob", token)
    assert [c.conversation_id for c in changed] == [conv.conversation_id]
    assert changed[0].last_seq == 0
    assert new_token > token
    assert (await store.list_conversations(bob.user_id, "d_bob", new_token))[0] == []


async def test_sync_token_returns_only_what_changed(store: Store) -> None:
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
async def test_receipt_counts(store: Store) -> None:
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


# -- restores from backup ------------------------------------------------------------
async def test_backup_time_without_stamp_is_the_newest_data(store: Store) -> None:
    assert await store.backup_time() is None  # empty: nothing to date
    p = await pair(store)
    assert await store.backup_time() == NOW  # the conversation's creation
    late = NewMessage(p.cid, p.alice.user_id, p.a_dev.device_id, "late", b'{"text":"x"}', NOW + 5)
    await store.append(late)
    assert await store.backup_time() == NOW + 5  # the newest message
    await store.create_conversation(GROUP, p.bob.user_id, [], "solo", NOW + 9)
    assert await store.backup_time() == NOW + 9


async def test_record_restore_changes_epoch_and_persists(open_store: StoreOpener) -> None:
    first = await open_store()
    try:
        assert await first.latest_restore() is None
        old = first.epoch
        restore = await first.record_restore(NOW - 3_600_000, NOW)
        assert restore.epoch == first.epoch != old
        assert (restore.previous_epoch, restore.from_ts, restore.to_ts) == (
            old,
            NOW - 3_600_000,
            NOW,
        )
        second = await first.record_restore(NOW - 60_000, NOW + 1)
        assert second.previous_epoch == restore.epoch
    finally:
        await first.close()
    reopened = await open_store()
    try:
        assert reopened.epoch == second.epoch
        assert await reopened.latest_restore() == second
    finally:
        await reopened.close()


def _report(p: Pair, epoch: str, *gaps: ReconcileGap, at: int = NOW) -> ReconcileReport:
    return ReconcileReport(epoch, p.a_dev.device_id, p.alice.user_id, at, list(gaps))


async def test_reconcile_reports_are_per_device_and_replaced(store: Store) -> None:
    p = await pair(store)
    other, _ = await store.create_conversation(GROUP, p.alice.user_id, [], "notes", NOW)
    epoch = (await store.record_restore(NOW - 1000, NOW)).epoch
    first = _report(p, epoch, ReconcileGap(p.cid, 4, 9, 2, 3))
    await store.save_reconcile_report(first)
    assert await store.reconcile_reports(epoch) == [first]
    # A re-report replaces the device's previous one, gaps and all.
    gaps = [ReconcileGap(p.cid, 4, 7, 1, 2), ReconcileGap(other.conversation_id, 0, 2, 2, 0)]
    again = _report(p, epoch, *sorted(gaps, key=lambda g: g.conversation_id), at=NOW + 5)
    await store.save_reconcile_report(again)
    # An empty report still says the device checked.
    bobs = ReconcileReport(epoch, p.b_dev.device_id, p.bob.user_id, NOW, [])
    await store.save_reconcile_report(bobs)
    expected = sorted([again, bobs], key=lambda r: r.device_id)
    assert await store.reconcile_reports(epoch) == expected
    assert await store.reconcile_reports("e_other") == []


async def test_reconcile_report_errors_change_nothing(store: Store) -> None:
    p = await pair(store)
    carol = await make_user(store, "carol")
    private, _ = await store.create_conversation(GROUP, carol.user_id, [], "carol's", NOW)
    epoch = store.epoch
    stored = _report(p, epoch, ReconcileGap(p.cid, 1, 2, 1, 0))
    await store.save_reconcile_report(stored)
    outsider = _report(
        p, epoch, ReconcileGap(p.cid, 1, 5, 4, 0), ReconcileGap(private.conversation_id, 0, 1, 0, 1)
    )
    await expect_error(ErrorCode.NOT_MEMBER, store.save_reconcile_report(outsider))
    unknown = _report(p, epoch, ReconcileGap("c_unknown", 0, 1, 0, 1))
    await expect_error(ErrorCode.NOT_MEMBER, store.save_reconcile_report(unknown))
    twice = _report(p, epoch, ReconcileGap(p.cid, 1, 5, 4, 0), ReconcileGap(p.cid, 1, 6, 5, 0))
    await expect_error(ErrorCode.BAD_REQUEST, store.save_reconcile_report(twice))
    assert await store.reconcile_reports(epoch) == [stored]
