"""Message kinds in the sans-I/O cores: the content the calls build, the new
frames as events, refusals of side entries, and the retention gap. No server,
no sockets: frames are fed as bytes and the resilient core is driven by calls."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from tests.client.test_protocol import WELCOME, frame, sent
from tests.client.test_resilience_core import CID, Harness, msg, result, transmits, welcome
from tidings_client import (
    ClientProtocol,
    Content,
    ConversationState,
    ConversationSyncState,
    DeleteContent,
    EditContent,
    EpochChanged,
    Hidden,
    HistoryGap,
    MemberAdded,
    Message,
    OutboxStatus,
    ReactionContent,
    RequestFailed,
    RequestSync,
    SendFailed,
    SyncComplete,
    SyncResult,
    TextContent,
    Transmit,
    delete_content,
    edit_content,
    parse_content,
    reaction_content,
    text_content,
)
from tidings_client.kinds import MAX_MENTIONS, message_content

# -- content ------------------------------------------------------------------------------


def test_text_options_left_at_default_are_not_sent() -> None:
    assert text_content("hi") == {"text": "hi"}
    assert text_content(
        "hi", reply_to=3, mentions=["u1", "u2"], mention_all=True, forwarded=True
    ) == {
        "text": "hi",
        "reply_to": 3,
        "mentions": ["u1", "u2"],
        "mention_all": True,
        "forwarded": True,
    }


def test_side_entry_contents() -> None:
    assert edit_content(4, "fixed") == {"kind": "edit", "target": 4, "text": "fixed"}
    assert delete_content(4) == {"kind": "delete", "target": 4}
    assert reaction_content(4, "👍") == {"kind": "reaction", "target": 4, "emoji": "👍", "on": True}
    assert reaction_content(4, "👍", on=False)["on"] is False


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: text_content("x", reply_to=0), "reply_to must be a seq >= 1"),
        (lambda: text_content("x", mentions=["a", "a"]), "mentions must be unique"),
        (
            lambda: text_content("x", mentions=[f"u{i}" for i in range(MAX_MENTIONS + 1)]),
            f"at most {MAX_MENTIONS} mentions",
        ),
        (lambda: edit_content(0, "x"), "target must be a seq >= 1"),
        (lambda: delete_content(-1), "target must be a seq >= 1"),
        (lambda: reaction_content(1, ""), "emoji must be 1-32 characters"),
        (lambda: reaction_content(1, "x" * 33), "emoji must be 1-32 characters"),
        (lambda: message_content({"text": "x"}, reply_to=1), "text options need the text"),
    ],
)
def test_what_the_server_would_refuse_as_bad_frame_fails_at_the_call(
    build: Callable[[], Content], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        build()


def test_parse_content_types_each_kind_and_gives_none_for_unknown_ones() -> None:
    assert parse_content({"text": "hi", "reply_to": 2}) == TextContent("hi", reply_to=2)
    assert parse_content(edit_content(3, "x")) == EditContent(3, "x")
    assert parse_content({"kind": "edit", "target": 3, "deleted": True}) == EditContent(
        3, deleted=True
    )
    assert parse_content(delete_content(3)) == DeleteContent(3)
    assert parse_content(reaction_content(3, "👍")) == ReactionContent(3, "👍", True)
    added = {"kind": "member_added", "user_ids": ["u3"], "by": "u1"}
    assert parse_content(added) == MemberAdded(("u3",), "u1")
    assert parse_content({"kind": "poll", "question": "?"}) is None
    assert parse_content({"kind": "reaction", "target": 3}) is None  # unreadable: unsupported


# -- ClientProtocol: frames in, events out --------------------------------------------------


def open_protocol() -> ClientProtocol:
    protocol = ClientProtocol()
    protocol.hello("tok")
    protocol.receive_data(json.dumps(WELCOME))
    protocol.data_to_send()
    protocol.events_received()
    return protocol


def test_hidden_and_conversation_state_frames_are_events() -> None:
    protocol = open_protocol()
    protocol.receive_data(frame(type="hidden", conversation_id="c1", seqs=[3, 5], hidden=True))
    protocol.receive_data(
        frame(
            type="conversation_state",
            conversation_id="c1",
            muted_until=-1,
            muted=True,
            archived=False,
            pinned=True,
        )
    )
    assert protocol.events_received() == [
        Hidden("c1", [3, 5], True),
        ConversationState("c1", muted_until=-1, muted=True, archived=False, pinned=True),
    ]


def test_unknown_kinds_stay_messages_with_their_raw_content() -> None:
    protocol = open_protocol()
    content = {"kind": "poll", "question": "lunch?", "options": ["a", "b"]}
    protocol.receive_data(
        frame(
            type="msg",
            conversation_id="c1",
            seq=1,
            message_id="m1",
            sender_id="u2",
            client_msg_id="x1",
            ts=1,
            content=content,
        )
    )
    [event] = protocol.events_received()
    assert isinstance(event, Message)
    assert (event.kind, event.content, event.text) == ("poll", content, None)


def test_sync_done_carries_unread_mentions_and_history_start() -> None:
    protocol = open_protocol()
    request_id = protocol.sync()
    protocol.data_to_send()
    state = {
        "conversation_id": "c1",
        "last_seq": 90,
        "delivered_seq": 80,
        "read_seq": 70,
        "unread": 12,
        "mentions": 2,
        "history_start": 41,
    }
    older = {"conversation_id": "c2", "last_seq": 3}  # an older server: fields absent
    protocol.receive_data(
        frame(type="sync_done", id=request_id, token="t", conversations=[state, older], more=False)
    )
    [done] = protocol.events_received()
    assert isinstance(done, SyncComplete)
    new, old = done.result.conversations
    assert (new.unread, new.mentions, new.history_start) == (12, 2, 41)
    assert (old.unread, old.mentions, old.history_start) == (None, None, 1)


@pytest.mark.parametrize("code", ["forbidden", "not_found"])
def test_refused_side_entry_fails_its_send(code: str) -> None:
    protocol = open_protocol()
    cmid = protocol.send("c1", edit_content(2, "too late"))
    [out] = sent(protocol)
    assert out["content"] == {"kind": "edit", "target": 2, "text": "too late"}
    protocol.receive_data(frame(type="error", code=code, message="no", retryable=False, ref=cmid))
    [failed] = protocol.events_received()
    assert isinstance(failed, RequestFailed)
    assert (failed.ref, failed.error.code, failed.error.retryable) == (cmid, code, False)
    assert protocol.pending_sends == {}


# -- ResilientCore: refusals and the retention gap --------------------------------------------


@pytest.mark.parametrize("code", ["forbidden", "not_found"])
def test_refused_side_entry_is_final_and_reported_like_other_refusals(code: str) -> None:
    h = Harness()
    h.online(sync=result([]))
    cmid = h.core.send(0.0, CID, delete_content(1))
    assert transmits(h.take()[0]) == [cmid]
    h.core.send_error(0.1, cmid, code, "not yours")
    _commands, events = h.take()
    [failed] = [e for e in events if isinstance(e, SendFailed)]
    assert (failed.client_msg_id, failed.code, failed.retryable) == (cmid, code, False)
    # Never sent again, not by a timer and not after a reconnect.
    h.core.tick(100.0)
    h.core.disconnected(101.0)
    h.core.tick(1000.0)
    h.core.connected(1000.0, welcome())
    assert transmits(h.take()[0]) == []
    entry = h.outbox.get(cmid)
    assert entry is not None
    assert entry.status is OutboxStatus.REJECTED
    assert h.core.discard(cmid)


def test_side_entries_go_through_the_outbox_with_one_client_msg_id() -> None:
    h = Harness()
    h.online(sync=result([]))
    cmid = h.core.send(0.0, CID, reaction_content(1, "👍"))
    assert transmits(h.take()[0]) == [cmid]
    h.core.tick(10.0)  # no ack within ack_timeout: resent as the same entry
    [again] = [c for c in h.take()[0] if isinstance(c, Transmit)]
    assert (again.client_msg_id, again.content) == (cmid, reaction_content(1, "👍"))


def purged(messages: list[Message], last_seq: int, history_start: int) -> SyncResult:
    """A sync answer for CID whose history now starts at ``history_start``."""
    state = ConversationSyncState(CID, last_seq, history_start=history_start)
    return SyncResult("tok", [state], messages)


def test_history_start_above_the_cursor_is_one_gap_and_moves_the_cursor() -> None:
    h = Harness()
    h.online(sync=result([msg(1), msg(2)]))
    assert h.core.cursors[CID] == 2
    # Offline for long: the server purged 3..9 and now starts at 10.
    h.core.message_received(1.0, msg(11))  # held: above a gap
    h.take()
    h.core.sync_completed(2.0, purged([msg(10)], last_seq=11, history_start=10))
    _commands, events = h.take()
    gaps = [e for e in events if isinstance(e, HistoryGap)]
    assert gaps == [HistoryGap(CID, 3, 10)]
    surfaced = [e.seq for e in events if isinstance(e, Message)]
    assert surfaced == [10, 11]
    assert h.core.cursors[CID] == 11
    assert h.store.cursors()[CID] == 11
    # The next sync reports the same history_start: no second gap.
    h.core.sync_completed(3.0, purged([], last_seq=11, history_start=10))
    assert not [e for e in h.take()[1] if isinstance(e, HistoryGap)]


def test_history_start_at_the_cursor_is_no_gap() -> None:
    h = Harness()
    h.online(sync=result([msg(1), msg(2)]))
    h.core.sync_completed(1.0, purged([], last_seq=2, history_start=3))
    assert not [e for e in h.take()[1] if isinstance(e, HistoryGap)]
    assert h.core.cursors[CID] == 2


def test_epoch_check_does_not_take_purged_messages_for_lost_ones() -> None:
    h = Harness()
    h.online(sync=result([msg(s) for s in range(1, 6)]))
    h.core.disconnected(1.0)
    h.core.tick(10.0)
    h.core.connected(10.0, welcome("e2"))
    assert [c for c in h.take()[0] if isinstance(c, RequestSync)] == [RequestSync({CID: 3})]
    # The restored server still has 5 as it was, but its retention purge
    # removed 1..4: absent from the answer, yet not lost in the restore.
    h.core.sync_completed(10.1, purged([msg(5)], last_seq=5, history_start=5))
    commands, events = h.take()
    assert not [c for c in commands if isinstance(c, RequestSync) and c.cursors == {CID: 0}]
    (changed,) = [e for e in events if isinstance(e, EpochChanged)]
    assert changed.lost == ()
    assert h.store.unconfirmed(CID) == []
