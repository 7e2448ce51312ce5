"""Store conformance, messaging: side entries and their targets (edits,
deletes for everyone, reactions), redaction, ``history(primary_only)`` and
``related``, unread and mention counts, later joiners, group and member
settings, hidden messages and the retention purge. Run on every engine
through ``conftest.py``'s fixtures; concurrency tests check invariants, never
timings, and every wait is bounded by ``WAIT_S``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Protocol

import msgspec
import pytest

from tests.store.support import (
    GROUP,
    NOW,
    WAIT_S,
    Pair,
    event,
    expect_error,
    last_seq,
    make_user,
    pair,
    text,
)
from tidings.core.errors import ErrorCode, TidingsError
from tidings.core.models import (
    MUTED_FOR_EVER,
    UNREAD_CAP,
    AppendResult,
    ConversationState,
    Device,
    HistoryVisibility,
    MemberSettings,
    NewMessage,
    User,
)
from tidings.core.ports.store.accounts import AccountStore
from tidings.core.ports.store.conversations import ConversationStore
from tidings.core.ports.store.cursors import CursorStore
from tidings.core.ports.store.hidden import HiddenStore
from tidings.core.ports.store.messages import MessageLog
from tidings.core.ports.store.retention import RetentionStore


class Subject(
    AccountStore,
    ConversationStore,
    MessageLog,
    CursorStore,
    HiddenStore,
    RetentionStore,
    Protocol,
):
    """The log with its side entries, the settings and listings they show
    in, hidden messages and the purge."""


DAY = 86_400_000
DELETED = b'{"kind":"deleted"}'


def scrubbed_edit(target: int) -> bytes:
    return b'{"kind":"edit","target":%d,"deleted":true}' % target


def side(
    p: Pair,
    sender: User,
    client_msg_id: str,
    kind: str,
    target: int,
    *,
    redacts: bool = False,
    mentions: tuple[str, ...] = (),
    **fields: object,
) -> NewMessage:
    """A side entry (edit, delete, reaction) of ``sender`` in the pair's group."""
    content = json.dumps({"kind": kind, "target": target, **fields}).encode()
    return NewMessage(
        p.cid,
        sender.user_id,
        _device(p, sender).device_id,
        client_msg_id,
        content,
        NOW,
        kind=kind,
        target=target,
        redacts=redacts,
        mentions=mentions,
    )


def edit(p: Pair, sender: User, cmid: str, target: int, body: str, *mentions: str) -> NewMessage:
    return side(p, sender, cmid, "edit", target, mentions=mentions, text=body)


def delete(p: Pair, sender: User, cmid: str, target: int) -> NewMessage:
    return side(p, sender, cmid, "delete", target, redacts=True)


def react(p: Pair, sender: User, cmid: str, target: int) -> NewMessage:
    return side(p, sender, cmid, "reaction", target, emoji="+1")


def says(p: Pair, sender: User, cmid: str, body: str = "hi", *mentions: str) -> NewMessage:
    """A text of ``sender`` in the pair's group, mentioning ``mentions``."""
    return msgspec.structs.replace(
        text(p.cid, sender, _device(p, sender), cmid, body), mentions=mentions
    )


def _device(p: Pair, user: User) -> Device:
    return p.a_dev if user == p.alice else p.b_dev


async def send_many_texts(store: MessageLog, p: Pair, count: int) -> list[AppendResult]:
    return [await store.append(says(p, p.alice, f"text-{i}", f"body {i}")) for i in range(count)]


async def state(store: CursorStore, user: User, cid: str) -> ConversationState:
    listed, _ = await store.list_conversations(user.user_id, "d_listing")
    (found,) = [c for c in listed if c.conversation_id == cid]
    return found


# -- targets ------------------------------------------------------------------------
async def test_side_entries_need_a_live_primary_target(store: Subject) -> None:
    p = await pair(store)
    await store.append(says(p, p.alice, "t1"))  # 1
    await store.append(edit(p, p.bob, "e1", 1, "changed"))  # 2 (anyone's edit: the core decides)
    await store.append(react(p, p.bob, "r1", 1))  # 3
    for rejected in (
        edit(p, p.alice, "bad-1", 99, "x"),
        react(p, p.alice, "bad-2", 2),  # a side entry is no target
        delete(p, p.alice, "bad-3", 3),
        edit(p, p.alice, "bad-4", 0, "x"),
    ):
        await expect_error(ErrorCode.NOT_FOUND, store.append(rejected))
    with pytest.raises(TidingsError) as info:
        await store.append(edit(p, p.alice, "bad-5", 99, "x"))
    assert info.value.message == "no message 99 in this conversation"
    await store.append(delete(p, p.alice, "d1", 1))  # 4
    for rejected in (
        edit(p, p.alice, "late-1", 1, "x"),
        react(p, p.bob, "late-2", 1),
        delete(p, p.bob, "late-3", 1),
    ):
        await expect_error(ErrorCode.FORBIDDEN, store.append(rejected))
    # Nothing of a rejected entry is stored, not even its idempotency key.
    assert await last_seq(store, p.cid) == 4
    assert [m.seq for m in await store.history(p.cid)] == [1, 2, 3, 4]
    retried = await store.append(says(p, p.alice, "bad-1"))
    assert (retried.duplicate, retried.message.seq) == (False, 5)


async def test_target_is_looked_up_in_the_entrys_own_conversation(store: Subject) -> None:
    p = await pair(store)
    other, _ = await store.create_conversation(GROUP, p.alice.user_id, [], "notes", NOW)
    await store.append(text(other.conversation_id, p.alice, p.a_dev, "o1"))
    await send_many_texts(store, p, 1)
    await expect_error(ErrorCode.NOT_FOUND, store.append(edit(p, p.alice, "e", 2, "x")))
    elsewhere = msgspec.structs.replace(
        edit(p, p.alice, "e2", 1, "x"), conversation_id=other.conversation_id
    )
    assert (await store.append(elsewhere)).message.seq == 2


# -- redaction ----------------------------------------------------------------------
async def test_delete_for_everyone_scrubs_the_target_and_its_edits(store: Subject) -> None:
    p = await pair(store)
    bob = p.bob.user_id
    original = await store.append(says(p, p.alice, "t1", "secret", bob))  # 1
    await store.append(edit(p, p.alice, "e1", 1, "secret 2", bob))  # 2
    reaction = await store.append(react(p, p.bob, "r1", 1))  # 3
    other = await store.append(says(p, p.alice, "t2", "stays"))  # 4
    await store.append(edit(p, p.alice, "e2", 4, "stays too"))  # 5
    assert original.message.content == json.dumps({"text": "secret"}).encode()
    before = await state(store, p.bob, p.cid)
    assert (before.unread, before.mentions) == (2, 1)
    removal = await store.append(delete(p, p.alice, "d1", 1))  # 6
    assert removal.message.seq == 6
    history = {m.seq: m for m in await store.history(p.cid)}
    assert history[1].content == DELETED
    assert history[2].content == scrubbed_edit(1)
    assert history[3] == reaction.message  # reactions stay as they were
    assert history[4] == other.message
    assert json.loads(history[5].content)["text"] == "stays too"
    assert history[6] == removal.message
    assert b"secret" not in b"".join(m.content for m in history.values())
    # The deleted entry counts as nothing, and its mention went with it.
    after = await state(store, p.bob, p.cid)
    assert (after.unread, after.mentions) == (1, 0)


async def test_edit_and_delete_racing_leave_no_edit_text(store: Subject) -> None:
    """Whatever order an edit and a delete of one target commit in, the edit
    is either refused (the target is deleted) or stored and then scrubbed."""
    p = await pair(store)
    rounds = 20
    targets = await send_many_texts(store, p, rounds)
    outcomes: list[BaseException | AppendResult] = []
    async with asyncio.timeout(WAIT_S):
        for i, target in enumerate(targets):
            seq = target.message.seq
            # One sender for both: a batch keeps each sender's call order, so
            # the two orders are both tried whether or not they share a batch.
            writes = [
                edit(p, p.alice, f"race-e{i}", seq, f"edited {i}"),
                delete(p, p.alice, f"race-d{i}", seq),
            ]
            if i % 2:
                writes.reverse()
            results = await asyncio.gather(
                *(store.append(w) for w in writes), return_exceptions=True
            )
            outcomes.extend(results)
    refused = [o for o in outcomes if isinstance(o, BaseException)]
    for outcome in refused:
        assert isinstance(outcome, TidingsError), outcome
        assert outcome.code is ErrorCode.FORBIDDEN
    stored = [o.message for o in outcomes if isinstance(o, AppendResult)]
    # A delete never loses to an edit.
    assert sum(b'"delete"' in m.content for m in stored) == rounds
    first, last = targets[0].message.seq, targets[-1].message.seq
    edits = [m for m in await store.related(p.cid, first, last) if b'"edit"' in m.content]
    for m in edits:
        assert m.content == scrubbed_edit(json.loads(m.content)["target"])
    # Appends take seqs in call order, so both orders happened.
    assert refused
    assert edits
    for m in await store.history(p.cid, limit=rounds, primary_only=True):
        assert m.content == DELETED


# -- views ----------------------------------------------------------------------------
async def test_history_primary_only_and_related(store: Subject) -> None:
    p = await pair(store)
    await store.append(says(p, p.alice, "t1"))  # 1
    await store.append(says(p, p.bob, "t2"))  # 2
    await store.append(edit(p, p.alice, "e1", 1, "one"))  # 3
    await store.append(react(p, p.alice, "r2", 2))  # 4
    await store.append(says(p, p.alice, "t5"))  # 5
    await store.append(delete(p, p.alice, "d5", 5))  # 6
    await store.append(react(p, p.bob, "r1", 1))  # 7

    async def seqs(after: int = 0, limit: int = 100, newest: bool = False) -> list[int]:
        history = await store.history(
            p.cid, after, limit=limit, newest_first=newest, primary_only=True
        )
        return [m.seq for m in history]

    assert [m.seq for m in await store.history(p.cid)] == [1, 2, 3, 4, 5, 6, 7]
    assert await seqs() == [1, 2, 5]
    assert await seqs(limit=2, newest=True) == [2, 5]
    assert await seqs(after=1, limit=1) == [2]

    async def related(first: int, last: int) -> list[int]:
        return [m.seq for m in await store.related(p.cid, first, last)]

    assert await related(1, 2) == [3, 4, 7]
    assert await related(1, 1) == [3, 7]
    assert await related(5, 7) == [6]
    assert await related(3, 4) == []
    assert await related(2, 1) == []
    assert await store.related("c_unknown", 1, 10) == []
    (entry,) = await store.related(p.cid, 2, 2)
    assert json.loads(entry.content) == {"kind": "reaction", "target": 2, "emoji": "+1"}


async def test_unread_and_mentions_count_what_a_person_sees(store: Subject) -> None:
    p = await pair(store)
    carol = await make_user(store, "carol")
    await store.change_members(
        p.cid, [carol.user_id], [], event(p.cid, p.alice, p.a_dev, "add-carol", "member_added")
    )  # 1 (Carol reads from here: the group's history is "joined")
    bob, c = p.bob.user_id, carol.user_id
    await store.append(says(p, p.alice, "t2", "hey bob", bob))  # 2
    await store.append(says(p, p.alice, "t3", "hey all", "*"))  # 3
    await store.append(says(p, p.alice, "t4", "plain"))  # 4
    await store.append(says(p, p.alice, "t5", "hey carol", c))  # 5
    await store.append(says(p, p.bob, "t6", "hey carol", c))  # 6: Bob's own
    await store.append(edit(p, p.alice, "e4", 4, "hey bob", bob))  # 7: a side entry
    await store.append(react(p, p.alice, "r6", 6))  # 8
    await store.append(says(p, p.alice, "t9", "oops", bob))  # 9
    await store.append(delete(p, p.alice, "d9", 9))  # 10: 9 is deleted
    await store.change_members(
        p.cid, [], [c], event(p.cid, p.alice, p.a_dev, "rm-carol", "member_removed")
    )  # 11
    await store.change_members(
        p.cid, [c], [], event(p.cid, p.alice, p.a_dev, "re-add-carol", "member_added")
    )  # 12
    got = await state(store, p.bob, p.cid)
    assert (got.last_seq, got.read_seq, got.unread, got.mentions) == (12, 0, 4, 2)
    alice = await state(store, p.alice, p.cid)
    # Alice's read cursor followed her own 1..5; then Bob's 6 is all she has not read.
    assert (alice.read_seq, alice.unread, alice.mentions) == (5, 1, 0)
    await store.advance_cursors(p.cid, bob, p.b_dev.device_id, None, 3)
    got = await state(store, p.bob, p.cid)
    assert (got.unread, got.mentions) == (2, 0)
    await store.advance_cursors(p.cid, bob, p.b_dev.device_id, None, 12)
    got = await state(store, p.bob, p.cid)
    assert (got.unread, got.mentions) == (0, 0)


async def test_unread_and_mentions_stop_at_the_cap(store: Subject) -> None:
    p = await pair(store)
    count = UNREAD_CAP + 3
    async with asyncio.timeout(WAIT_S):
        await asyncio.gather(
            *(store.append(says(p, p.alice, f"m{i}", "all", "*")) for i in range(count))
        )
    got = await state(store, p.bob, p.cid)
    assert (got.last_seq, got.unread, got.mentions) == (count, UNREAD_CAP, UNREAD_CAP)
    await store.advance_cursors(p.cid, p.bob.user_id, p.b_dev.device_id, None, 5)
    got = await state(store, p.bob, p.cid)
    assert (got.unread, got.mentions) == (count - 5, count - 5)


# -- later joiners ----------------------------------------------------------------------
async def test_later_joiners_read_from_their_join_or_everything(store: Subject) -> None:
    p = await pair(store)
    carol = await make_user(store, "carol")
    dave = await make_user(store, "dave")
    await send_many_texts(store, p, 3)  # 1..3
    await store.change_members(
        p.cid, [carol.user_id], [], event(p.cid, p.alice, p.a_dev, "add-c", "member_added")
    )  # 4
    await store.append(says(p, p.bob, "t5"))  # 5
    members = {m.user_id: m for m in await store.get_members(p.cid)}
    assert members[carol.user_id].visible_after == 3
    assert members[p.bob.user_id].visible_after == 0
    got = await state(store, carol, p.cid)
    assert (got.history_start, got.unread) == (4, 1)
    assert (await state(store, p.bob, p.cid)).history_start == 1

    conv = await store.update_conversation(p.cid, history=HistoryVisibility.FULL)
    assert conv.history is HistoryVisibility.FULL
    await store.change_members(
        p.cid, [dave.user_id], [], event(p.cid, p.alice, p.a_dev, "add-d", "member_added")
    )  # 6
    members = {m.user_id: m for m in await store.get_members(p.cid)}
    assert members[dave.user_id].visible_after == 0
    assert members[carol.user_id].visible_after == 3  # a setting is no rewrite of the past
    got = await state(store, dave, p.cid)
    assert (got.history_start, got.unread) == (1, 4)  # Alice's 1..3 and Bob's 5


# -- settings ---------------------------------------------------------------------------
async def test_update_conversation_changes_only_what_is_given(store: Subject) -> None:
    p = await pair(store)
    assert (p.conv.history, p.conv.retention_days, p.conv.purged_seq) == (
        HistoryVisibility.JOINED,
        None,
        0,
    )
    assert await store.get_conversation(p.cid) == p.conv
    renamed = await store.update_conversation(p.cid, title="renamed")
    assert renamed == msgspec.structs.replace(p.conv, title="renamed")
    kept = await store.update_conversation(p.cid, retention_days=7)
    assert (kept.title, kept.history, kept.retention_days) == ("renamed", p.conv.history, 7)
    forever = await store.update_conversation(p.cid, retention_days=0)
    assert forever.retention_days == 0
    full = await store.update_conversation(
        p.cid, history=HistoryVisibility.FULL, retention_days=None
    )
    assert (full.title, full.history, full.retention_days) == (
        "renamed",
        HistoryVisibility.FULL,
        None,
    )
    assert await store.get_conversation(p.cid) == full
    assert await store.update_conversation(p.cid) == full
    await expect_error(ErrorCode.NOT_FOUND, store.update_conversation("c_unknown", title="x"))
    await expect_error(ErrorCode.NOT_FOUND, store.update_conversation("c_unknown"))


async def test_update_member_settings_is_partial_and_per_member(store: Subject) -> None:
    p = await pair(store)
    alice = p.alice.user_id
    assert (await state(store, p.alice, p.cid)).settings == MemberSettings()
    muted = await store.update_member_settings(p.cid, alice, muted_until=MUTED_FOR_EVER)
    assert muted == MemberSettings(MUTED_FOR_EVER, False, False)
    archived = await store.update_member_settings(p.cid, alice, archived=True)
    assert archived == MemberSettings(MUTED_FOR_EVER, True, False)
    async with asyncio.timeout(WAIT_S):  # two devices, two fields, at once
        await asyncio.gather(
            store.update_member_settings(p.cid, alice, pinned=True),
            store.update_member_settings(p.cid, alice, muted_until=NOW + 1000),
        )
    unmuted = await store.update_member_settings(p.cid, alice)
    assert unmuted == MemberSettings(NOW + 1000, True, True)
    cleared = await store.update_member_settings(p.cid, alice, muted_until=None, archived=False)
    assert cleared == MemberSettings(None, False, True)
    assert (await state(store, p.alice, p.cid)).settings == cleared
    assert (await state(store, p.bob, p.cid)).settings == MemberSettings()
    outsider = await make_user(store, "mallory")
    await expect_error(
        ErrorCode.NOT_MEMBER, store.update_member_settings(p.cid, outsider.user_id, pinned=True)
    )
    await expect_error(
        ErrorCode.NOT_MEMBER, store.update_member_settings("c_unknown", alice, pinned=True)
    )


# -- hidden messages --------------------------------------------------------------------
async def test_hide_and_unhide(store: Subject) -> None:
    p = await pair(store)
    await send_many_texts(store, p, 4)
    alice, bob = p.alice.user_id, p.bob.user_id
    assert await store.hidden_seqs(alice, p.cid) == []
    assert await store.set_hidden(alice, p.cid, [3, 1], True) == [1, 3]
    assert await store.set_hidden(alice, p.cid, [1], True) == [1, 3]
    assert await store.set_hidden(alice, p.cid, [], True) == [1, 3]
    assert await store.hidden_seqs(alice, p.cid) == [1, 3]
    assert await store.hidden_seqs(bob, p.cid) == []  # hiding is one user's view
    assert await store.set_hidden(bob, p.cid, [2], True) == [2]
    assert await store.set_hidden(alice, p.cid, [1, 2], False) == [3]
    assert await store.set_hidden(alice, p.cid, [4], False) == [3]
    assert await store.hidden_seqs(alice, p.cid) == [3]
    assert await store.hidden_seqs(bob, p.cid) == [2]
    assert len(await store.history(p.cid)) == 4  # the entries stay for everyone


# -- retention --------------------------------------------------------------------------
async def aged(store: MessageLog, p: Pair, cid: str, ages_days: Sequence[float]) -> None:
    """Texts of Alice in ``cid``, the i-th ``ages_days[i]`` days old."""
    for i, age in enumerate(ages_days):
        message = text(cid, p.alice, p.a_dev, f"{cid}-aged-{i}")
        await store.append(msgspec.structs.replace(message, ts=NOW - int(age * DAY)))


async def test_purge_removes_an_expired_prefix_by_each_policy(store: Subject) -> None:
    p = await pair(store)
    kept, _ = await store.create_conversation(GROUP, p.alice.user_id, [], "kept", NOW)
    month, _ = await store.create_conversation(GROUP, p.alice.user_id, [], "month", NOW)
    await store.update_conversation(kept.conversation_id, retention_days=0)
    await store.update_conversation(month.conversation_id, retention_days=30)
    # A later seq may carry an older ts (clocks differ): the prefix stops at the
    # first entry that has not expired; older-stamped ones after it wait.
    await aged(store, p, p.cid, [10, 10, 1, 8, 1, 0])
    await aged(store, p, kept.conversation_id, [400, 400])
    await aged(store, p, month.conversation_id, [40, 10, 40, 10])
    await store.set_hidden(p.bob.user_id, p.cid, [2, 5], True)
    await store.set_hidden(p.alice.user_id, p.cid, [4], True)

    # The server keeps for ever: only the conversation with a policy of its own goes.
    first = await store.purge_expired(NOW, 0, 1000)
    assert first.purged == {month.conversation_id: 1}
    assert first.entries == 1
    assert [m.seq for m in await store.history(month.conversation_id)] == [2, 3, 4]

    second = await store.purge_expired(NOW, 7, 1000)
    assert second.purged == {p.cid: 2}
    assert second.entries == 2
    assert [m.seq for m in await store.history(p.cid)] == [3, 4, 5, 6]
    assert [m.seq for m in await store.history(kept.conversation_id)] == [1, 2]
    assert await store.hidden_seqs(p.bob.user_id, p.cid) == [5]
    assert await store.hidden_seqs(p.alice.user_id, p.cid) == [4]
    conv = await store.get_conversation(p.cid)
    assert conv is not None
    assert (conv.purged_seq, conv.last_seq) == (2, 6)
    got = await state(store, p.bob, p.cid)
    assert (got.history_start, got.unread) == (3, 4)

    nothing = await store.purge_expired(NOW, 7, 1000)
    assert (nothing.purged, nothing.entries) == ({}, 0)
    # The seq stream goes on after a purge.
    assert (await store.append(says(p, p.alice, "after"))).message.seq == 7


async def test_purge_respects_max_entries_and_finishes(store: Subject) -> None:
    p = await pair(store)
    other, _ = await store.create_conversation(GROUP, p.alice.user_id, [], "other", NOW)
    await aged(store, p, p.cid, [9] * 10 + [0])
    await aged(store, p, other.conversation_id, [9] * 4)
    # A later joiner's start is the later of their join and the purge.
    carol = await make_user(store, "carol")
    await store.change_members(
        p.cid, [carol.user_id], [], event(p.cid, p.alice, p.a_dev, "add-c", "member_added")
    )  # 12
    assert (await state(store, carol, p.cid)).history_start == 12
    purged: dict[str, int] = {}
    total = 0
    for _ in range(20):
        result = await store.purge_expired(NOW, 7, 3)
        assert 0 <= result.entries <= 3
        for cid, seq in result.purged.items():
            assert seq > purged.get(cid, 0)  # a prefix that only grows
        purged.update(result.purged)
        total += result.entries
        if result.entries == 0:
            break
    else:
        raise AssertionError("the purge did not finish")
    assert purged == {p.cid: 10, other.conversation_id: 4}
    assert total == 14
    assert [m.seq for m in await store.history(p.cid)] == [11, 12]
    assert await store.history(other.conversation_id) == []
    assert (await state(store, p.bob, p.cid)).history_start == 11
    assert (await state(store, carol, p.cid)).history_start == 12
    assert (await store.purge_expired(NOW, 7, 0)).entries == 0
