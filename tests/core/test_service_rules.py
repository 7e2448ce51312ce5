"""The rules of the product, asked of the services directly: no sockets.

Each test builds the services as a node does (``app.build_node``), on a
SQLite store in the test's directory and the in-process bus, and records
every event the services publish, so that a rule's effect on other nodes is
checked along with its answer. The end-to-end suites check the same rules
through the transports; these say which rule failed in a few milliseconds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import make_settings
from tidings.app import BUILT_IN
from tidings.bus.memory import MemoryBus
from tidings.core.accounts import AccountService
from tidings.core.auth import AuthService
from tidings.core.errors import ErrorCode, TidingsError
from tidings.core.events import (
    BusEvent,
    DisabledEvent,
    JoinedEvent,
    MessageEvent,
    conversation_topic,
    decode_event,
    user_topic,
)
from tidings.core.models import ConversationKind, Device
from tidings.core.publisher import Publisher
from tidings.core.service import ChatService, ack
from tidings.features.host import content_kinds_of
from tidings.store.sqlite import SqliteStore

DIRECT = ConversationKind.DIRECT
GROUP = ConversationKind.GROUP
PASSWORD = "correct horse"
TEXT = b'{"text":"hi"}'


@dataclass
class Rig:
    chat: ChatService
    auth: AuthService
    accounts: AccountService
    bus: MemoryBus
    heard: list[tuple[str, BusEvent]] = field(default_factory=list)
    persisted: list[None] = field(default_factory=list)

    def hear(self, topic: str, payload: bytes) -> None:
        self.heard.append((topic, decode_event(payload)))

    async def user(self, name: str) -> Device:
        """A registered user's device, with the user's topic listened to."""
        await self.auth.register(name, PASSWORD)
        _, device = await self.auth.login(name, PASSWORD, None)
        await self.bus.subscribe(user_topic(device.user_id))
        return device

    async def group(self, admin: Device, *members: Device) -> str:
        conv, _ = await self.chat.create_conversation(
            admin, GROUP, [m.user_id for m in members], "g"
        )
        await self.bus.subscribe(conversation_topic(conv.conversation_id))
        return conv.conversation_id

    def events(self, kind: type[Any]) -> list[Any]:
        return [event for _, event in self.heard if isinstance(event, kind)]


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    settings = make_settings(tmp_path, max_group_members=4)
    store = SqliteStore(str(tmp_path / "tidings.db"))
    await store.start()
    bus = MemoryBus()
    publisher = Publisher(bus)
    persisted: list[None] = []
    rig = Rig(
        ChatService(
            store,
            publisher,
            settings,
            content_kinds_of(BUILT_IN),
            lambda: persisted.append(None),
        ),
        AuthService(store, settings.password_hash_memory_kib, settings.password_hash_time_cost),
        AccountService(store, publisher),
        bus,
        persisted=persisted,
    )
    await bus.start(rig.hear)
    try:
        yield rig
    finally:
        await publisher.close()
        await bus.close()
        await store.close()


async def refused(code: ErrorCode, call: Awaitable[object]) -> str:
    """Await ``call``, which must raise ``code``; its message."""
    with pytest.raises(TidingsError) as info:
        await call
    assert info.value.code is code, info.value
    return info.value.message


# -- who may post where -----------------------------------------------------------


async def test_members_post_and_others_may_not(rig: Rig) -> None:
    alice, bob, eve = await rig.user("alice"), await rig.user("bob"), await rig.user("eve")
    cid = await rig.group(alice, bob)
    sent = await rig.chat.send(bob, cid, "m1", TEXT)
    assert (sent.message.seq, sent.message.sender_id) == (1, bob.user_id)
    await refused(ErrorCode.NOT_MEMBER, rig.chat.send(eve, cid, "m2", TEXT))
    await refused(ErrorCode.NOT_MEMBER, rig.chat.send(alice, "c_nope", "m3", TEXT))
    assert [e.seq for e in rig.events(MessageEvent)] == [1]


async def test_ack_carries_the_stored_message_and_a_repeat_is_a_duplicate(rig: Rig) -> None:
    alice, bob = await rig.user("alice"), await rig.user("bob")
    cid = await rig.group(alice, bob)
    first = await rig.chat.send(alice, cid, "same", b'{"text":"1"}', origin_session="s1")
    frame = ack(first, "ref-1")
    m = first.message
    assert (frame.conversation_id, frame.client_msg_id, frame.seq) == (cid, "same", 1)
    assert (frame.message_id, frame.ts, frame.duplicate, frame.id) == (
        m.message_id,
        m.ts,
        False,
        "ref-1",
    )
    again = await rig.chat.send(alice, cid, "same", b'{"text":"2"}')
    repeat = ack(again)
    assert repeat.duplicate is True
    assert repeat.id is None
    assert (repeat.seq, repeat.message_id) == (1, m.message_id)
    assert again.message.content == b'{"text":"1"}'  # the stored message, not the repeat's
    # One message stored, counted and announced (with the sender's session).
    assert len(rig.persisted) == 1
    assert [(e.seq, e.origin_session) for e in rig.events(MessageEvent)] == [(1, "s1")]


# -- creating conversations ---------------------------------------------------------


async def test_a_direct_conversation_is_unique_per_pair(rig: Rig) -> None:
    alice, bob = await rig.user("alice"), await rig.user("bob")
    conv, created = await rig.chat.create_conversation(alice, DIRECT, [bob.user_id], None)
    same, again = await rig.chat.create_conversation(bob, DIRECT, [alice.user_id], None)
    assert created is True
    assert again is False
    assert same.conversation_id == conv.conversation_id
    joined = rig.events(JoinedEvent)
    assert sorted(e.user_id for e in joined) == sorted([alice.user_id, bob.user_id])


async def test_a_direct_conversation_has_exactly_one_other_member(rig: Rig) -> None:
    alice, bob, carol = await rig.user("alice"), await rig.user("bob"), await rig.user("carol")
    for members in ([], [alice.user_id], [bob.user_id, carol.user_id]):
        message = await refused(
            ErrorCode.BAD_REQUEST, rig.chat.create_conversation(alice, DIRECT, members, None)
        )
        assert message == "a direct conversation has exactly one other member"
    assert await rig.chat.list_conversations(alice) == []
    assert rig.events(JoinedEvent) == []


async def test_a_group_is_bounded_and_its_creator_is_its_admin(rig: Rig) -> None:
    users = [await rig.user(f"user{n}") for n in range(5)]
    message = await refused(
        ErrorCode.BAD_REQUEST,
        rig.chat.create_conversation(users[0], GROUP, [u.user_id for u in users[1:]], None),
    )
    assert message == "a group has at most 4 members"
    cid = await rig.group(users[0], users[1])
    conv, members = await rig.chat.get_conversation(users[1].user_id, cid)
    assert conv.kind is GROUP
    assert {m.user_id: m.role.value for m in members} == {
        users[0].user_id: "admin",
        users[1].user_id: "member",
    }


# -- member changes -------------------------------------------------------------------


async def test_only_a_group_admin_changes_members_but_anyone_may_leave(rig: Rig) -> None:
    alice, bob, carol = await rig.user("alice"), await rig.user("bob"), await rig.user("carol")
    cid = await rig.group(alice, bob)
    await refused(ErrorCode.FORBIDDEN, rig.chat.change_members(bob, cid, [carol.user_id], []))
    await refused(ErrorCode.FORBIDDEN, rig.chat.change_members(bob, cid, [], [alice.user_id]))
    await refused(ErrorCode.NOT_MEMBER, rig.chat.change_members(carol, cid, [], [carol.user_id]))
    await refused(ErrorCode.NOT_FOUND, rig.chat.change_members(alice, "c_nope", [], []))
    added = await rig.chat.change_members(alice, cid, [carol.user_id], [])
    assert added is not None
    assert added.seq == 1
    assert await rig.chat.change_members(alice, cid, [carol.user_id], []) is None  # no change
    left = await rig.chat.change_members(bob, cid, [], [bob.user_id])
    assert left is not None
    assert left.seq == 2
    members = await rig.chat.get_members(alice.user_id, cid)
    assert [m.user_id for m in members] == sorted([alice.user_id, carol.user_id])
    events = rig.events(MessageEvent)
    assert [(e.seq, e.membership_changed, e.added, e.extra_recipients) for e in events] == [
        (1, True, [carol.user_id], []),
        (2, True, [], [bob.user_id]),
    ]
    assert [e.user_id for e in rig.events(JoinedEvent)][-1] == carol.user_id


async def test_members_of_a_direct_conversation_are_fixed(rig: Rig) -> None:
    alice, bob, carol = await rig.user("alice"), await rig.user("bob"), await rig.user("carol")
    conv, _ = await rig.chat.create_conversation(alice, DIRECT, [bob.user_id], None)
    await refused(
        ErrorCode.BAD_REQUEST,
        rig.chat.change_members(alice, conv.conversation_id, [carol.user_id], []),
    )


async def test_a_group_never_grows_past_its_bound(rig: Rig) -> None:
    users = [await rig.user(f"user{n}") for n in range(5)]
    cid = await rig.group(users[0], users[1], users[2], users[3])
    await refused(
        ErrorCode.BAD_REQUEST, rig.chat.change_members(users[0], cid, [users[4].user_id], [])
    )


# -- reading ------------------------------------------------------------------------------


async def test_history_and_a_conversation_are_for_members_only(rig: Rig) -> None:
    alice, bob, eve = await rig.user("alice"), await rig.user("bob"), await rig.user("eve")
    cid = await rig.group(alice, bob)
    for n in range(3):
        await rig.chat.send(alice, cid, f"m{n}", TEXT)
    page = await rig.chat.history(bob.user_id, cid, 0, None, 2)
    assert [m.seq for m in page] == [1, 2]
    newest = await rig.chat.history(bob.user_id, cid, 0, 4, 2)
    assert [m.seq for m in newest] == [2, 3]
    await refused(ErrorCode.NOT_MEMBER, rig.chat.history(eve.user_id, cid, 0, None, 10))
    await refused(ErrorCode.NOT_MEMBER, rig.chat.get_conversation(eve.user_id, cid))
    # An unknown id answers as a foreign one does: ids cannot be probed.
    await refused(ErrorCode.NOT_MEMBER, rig.chat.get_conversation(eve.user_id, "c_nope"))


async def test_a_reconcile_report_is_for_the_current_epoch(rig: Rig) -> None:
    alice = await rig.user("alice")
    message = await refused(ErrorCode.BAD_FRAME, rig.chat.reconcile(alice, "old", []))
    assert message == f"reconcile is for epoch 'old'; the server's is {rig.chat.epoch!r}"
    await rig.chat.reconcile(alice, rig.chat.epoch, [])


# -- accounts ---------------------------------------------------------------------------


async def test_users_are_found_by_id_or_name_or_not_at_all(rig: Rig) -> None:
    alice = await rig.user("alice")
    assert (await rig.accounts.find_user("ALICE")).user_id == alice.user_id
    assert (await rig.accounts.get_user(alice.user_id)).username == "alice"
    await refused(ErrorCode.NOT_FOUND, rig.accounts.find_user("nobody"))
    await refused(ErrorCode.NOT_FOUND, rig.accounts.get_user("u_nope"))


async def test_disabling_signs_out_everywhere_and_is_announced(rig: Rig) -> None:
    await rig.auth.register("alice", PASSWORD)
    token, device = await rig.auth.login("alice", PASSWORD, "phone")
    await rig.bus.subscribe(user_topic(device.user_id))
    assert await rig.accounts.set_disabled(device.user_id, True) is True
    await refused(ErrorCode.UNAUTHORIZED, rig.auth.authenticate(token))
    message = await refused(ErrorCode.FORBIDDEN, rig.auth.login("alice", PASSWORD, None))
    assert message == "this account is disabled"
    # Announced again when nothing changed: the first may have been lost.
    assert await rig.accounts.set_disabled(device.user_id, True) is False
    assert rig.events(DisabledEvent) == [DisabledEvent(device.user_id)] * 2
    assert rig.heard[-1][0] == user_topic(device.user_id)
    assert await rig.accounts.set_disabled(device.user_id, False) is True
    assert len(rig.events(DisabledEvent)) == 2  # enabling announces nothing
    await refused(ErrorCode.UNAUTHORIZED, rig.auth.authenticate(token))  # old tokens stay revoked
    await rig.auth.login("alice", PASSWORD, None)
    listed = {a.user.username: a.disabled_at for a in await rig.accounts.list_accounts()}
    assert listed == {"alice": None}


async def test_a_password_reset_revokes_every_token(rig: Rig) -> None:
    await rig.auth.register("alice", PASSWORD)
    first, device = await rig.auth.login("alice", PASSWORD, "phone")
    await rig.auth.login("alice", PASSWORD, "laptop")
    assert await rig.auth.reset_password(device.user_id, "another horse") == 2
    await refused(ErrorCode.UNAUTHORIZED, rig.auth.authenticate(first))
    await refused(ErrorCode.UNAUTHORIZED, rig.auth.login("alice", PASSWORD, None))
    await refused(ErrorCode.BAD_REQUEST, rig.auth.reset_password(device.user_id, "short"))
    await rig.auth.login("alice", "another horse", None)
