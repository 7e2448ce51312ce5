"""The sans-I/O client core, tested by feeding bytes: no sockets, no event loop."""

from __future__ import annotations

import json

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings_client import (
    Ack,
    ClientProtocol,
    Closed,
    Cursors,
    InvalidStateError,
    Message,
    Presence,
    ProtocolViolation,
    Receipt,
    ReceiptSummary,
    Reconnect,
    RequestFailed,
    ServerError,
    State,
    SyncComplete,
    TidingsClientError,
    Typing,
    UnknownFrame,
    Welcome,
)
from tidings_client.frames import (
    Notice,
    Pong,
    ReconcileConversation,
    Reconciled,
    ReconcileRequest,
)
from tidings_client.protocol import TRANSITIONS, Trigger, state_diagram

WELCOME: dict[str, object] = {
    "type": "welcome",
    "user_id": "u1",
    "device_id": "d1",
    "session_id": "s1",
    "epoch": "e1",
    "heartbeat_ms": 25_000,
    "server_time": 1_700_000_000_000,
    "limits": {"max_content_bytes": 100, "max_frame_bytes": 1000, "typing_ttl_ms": 5000},
}


def frame(**fields: object) -> bytes:
    return json.dumps(fields).encode()


def sent(protocol: ClientProtocol) -> list[dict[str, object]]:
    """The frames the protocol wants written, decoded."""
    out = []
    for data in protocol.data_to_send():
        obj = json.loads(data)
        assert isinstance(obj, dict)
        out.append(obj)
    return out


def msg(cid: str, seq: int, text: str = "hi", sender: str = "u2") -> bytes:
    return frame(
        type="msg",
        conversation_id=cid,
        seq=seq,
        message_id=f"m{cid}{seq}",
        sender_id=sender,
        client_msg_id=f"c{cid}{seq}",
        ts=1000 + seq,
        content={"text": text},
    )


def state_of(protocol: ClientProtocol) -> State:
    """The state, read through a call so that mypy does not narrow it across calls."""
    return protocol.state


def syncing(protocol: ClientProtocol) -> bool:
    return protocol.sync_in_progress


def opened(cursors: Cursors | None = None) -> ClientProtocol:
    protocol = ClientProtocol(cursors)
    protocol.hello("tok")
    protocol.receive_data(json.dumps(WELCOME))
    protocol.data_to_send()
    protocol.events_received()
    return protocol


# -- lifecycle ---------------------------------------------------------------------


def test_hello_is_first_frame_and_carries_client_info() -> None:
    protocol = ClientProtocol()
    assert state_of(protocol) is State.CONNECTING
    protocol.hello("tok", client_name="bot", network="wifi", epoch="e0")
    assert state_of(protocol) is State.AUTHENTICATING
    assert sent(protocol) == [
        {
            "type": "hello",
            "token": "tok",
            "client": {"name": "bot", "version": "0.1.0", "network": "wifi"},
            "epoch": "e0",
        }
    ]


def test_hello_without_epoch_omits_the_field() -> None:
    protocol = ClientProtocol()
    protocol.hello("tok")
    [hello] = sent(protocol)
    assert "epoch" not in hello
    assert hello["client"] == {"name": "tidings-py", "version": "0.1.0"}


def test_hello_rejects_unknown_network() -> None:
    protocol = ClientProtocol()
    with pytest.raises(ValueError, match="network"):
        protocol.hello("tok", network="satellite")  # type: ignore[arg-type]
    assert state_of(protocol) is State.CONNECTING


def test_hello_twice_is_an_invalid_transition() -> None:
    protocol = ClientProtocol()
    protocol.hello("tok")
    with pytest.raises(InvalidStateError):
        protocol.hello("tok")


def test_calls_before_welcome_raise() -> None:
    protocol = ClientProtocol()
    protocol.hello("tok")
    with pytest.raises(InvalidStateError):
        protocol.send("c1", "hi")
    with pytest.raises(InvalidStateError):
        protocol.sync()
    with pytest.raises(InvalidStateError):
        protocol.delivered("c1", 1)
    # ping is allowed: any frame keeps the connection alive.
    protocol.ping()


def test_ping_before_hello_raises() -> None:
    with pytest.raises(InvalidStateError):
        ClientProtocol().ping()


def test_welcome_opens_the_connection() -> None:
    protocol = ClientProtocol()
    protocol.hello("tok")
    protocol.receive_data(json.dumps(WELCOME))
    assert state_of(protocol) is State.OPEN
    [event] = protocol.events_received()
    assert isinstance(event, Welcome)
    assert protocol.welcome == event
    assert event.limits.max_content_bytes == 100
    assert event.epoch == "e1"


def test_welcome_limits_default_and_extra_fields_are_ignored() -> None:
    protocol = ClientProtocol()
    protocol.hello("tok")
    welcome = dict(WELCOME, limits={"send_burst": 5}, brand_new_field=[1, 2])
    protocol.receive_data(json.dumps(welcome))
    assert protocol.welcome is not None
    assert protocol.welcome.limits.max_content_bytes == 64 * 1024
    assert protocol.welcome.limits.max_frame_bytes == 1024 * 1024
    assert protocol.welcome.limits.typing_ttl_ms == 5000


def test_second_welcome_is_a_protocol_violation() -> None:
    protocol = opened()
    protocol.receive_data(json.dumps(WELCOME))
    [event] = protocol.events_received()
    assert isinstance(event, ProtocolViolation)
    assert "welcome" in event.reason
    assert state_of(protocol) is State.OPEN


def test_error_before_welcome_is_an_event() -> None:
    protocol = ClientProtocol()
    protocol.hello("bad")
    protocol.receive_data(
        frame(type="error", code="unauthorized", message="bad token", retryable=False)
    )
    [event] = protocol.events_received()
    assert event == ServerError("unauthorized", "bad token", False)
    assert state_of(protocol) is State.AUTHENTICATING


def test_close_then_connection_lost() -> None:
    protocol = opened()
    protocol.close()
    assert state_of(protocol) is State.CLOSING
    protocol.close()  # idempotent
    with pytest.raises(InvalidStateError):
        protocol.send("c1", "late")
    protocol.connection_lost(1000, "bye")
    assert state_of(protocol) is State.CLOSED
    assert protocol.events_received() == [Closed(1000, "bye")]
    protocol.connection_lost(1000, "again")  # no second Closed
    assert protocol.events_received() == []
    with pytest.raises(InvalidStateError):
        protocol.receive_data(msg("c1", 1))


def test_answers_still_processed_while_closing() -> None:
    protocol = opened()
    cmid = protocol.send("c1", "hi")
    protocol.close()
    protocol.receive_data(ack_frame(cmid, "c1", 1))
    [event] = protocol.events_received()
    assert isinstance(event, Ack)


def test_transition_table_is_complete_and_diagram_mentions_every_state() -> None:
    reachable = {State.CONNECTING} | set(TRANSITIONS.values())
    assert reachable == set(State)
    for state in State:
        if state is not State.CLOSED:
            assert TRANSITIONS[(state, Trigger.CONNECTION_LOST)] is State.CLOSED
    diagram = state_diagram()
    for state in State:
        assert state.name in diagram


# -- send / ack / error ------------------------------------------------------------


def ack_frame(cmid: str, cid: str, seq: int, *, duplicate: bool = False) -> bytes:
    return frame(
        type="ack",
        client_msg_id=cmid,
        conversation_id=cid,
        seq=seq,
        message_id=f"m{seq}",
        ts=5,
        duplicate=duplicate,
    )


def test_send_text_and_ack() -> None:
    protocol = opened()
    cmid = protocol.send("c1", "hello")
    assert len(cmid) == 36  # a UUID
    assert sent(protocol) == [
        {
            "type": "send",
            "conversation_id": "c1",
            "client_msg_id": cmid,
            "content": {"text": "hello"},
        }
    ]
    assert protocol.pending_sends == {cmid: "c1"}
    protocol.receive_data(ack_frame(cmid, "c1", 7, duplicate=True))
    [event] = protocol.events_received()
    assert event == Ack(cmid, "c1", 7, "m7", 5, True)
    assert protocol.pending_sends == {}


def test_send_object_content_with_own_client_msg_id() -> None:
    protocol = opened()
    assert protocol.send("c1", {"kind": "text", "text": "x"}, "mine") == "mine"
    [send] = sent(protocol)
    assert send["content"] == {"kind": "text", "text": "x"}
    assert send["client_msg_id"] == "mine"


def test_resend_of_pending_client_msg_id_goes_out_again() -> None:
    protocol = opened()
    protocol.send("c1", "x", "same")
    protocol.send("c1", "x", "same")
    assert len(sent(protocol)) == 2
    protocol.receive_data(ack_frame("same", "c1", 1))
    assert protocol.pending_sends == {}


def test_send_over_content_limit_is_refused_locally() -> None:
    protocol = opened()  # max_content_bytes = 100
    with pytest.raises(TidingsClientError) as info:
        protocol.send("c1", "x" * 200)
    assert info.value.code == "too_large"
    assert not info.value.retryable
    assert protocol.data_to_send() == []
    assert protocol.pending_sends == {}


def test_error_answering_a_send_is_request_failed() -> None:
    protocol = opened()
    cmid = protocol.send("c1", "x")
    protocol.receive_data(
        frame(
            type="error",
            code="rate_limited",
            message="slow down",
            ref=cmid,
            retryable=True,
            retry_after_ms=250,
        )
    )
    [event] = protocol.events_received()
    assert isinstance(event, RequestFailed)
    assert event.ref == cmid
    assert event.error.code == "rate_limited"
    assert event.error.retry_after_ms == 250
    assert protocol.pending_sends == {}


def test_forgotten_send_errors_become_server_errors() -> None:
    protocol = opened()
    cmid = protocol.send("c1", "x")
    protocol.forget_send(cmid)
    protocol.receive_data(frame(type="error", code="not_member", message="no", ref=cmid))
    [event] = protocol.events_received()
    assert isinstance(event, ServerError)
    assert event.ref == cmid


@pytest.mark.parametrize("ref", [None, "someone-elses"])
def test_unsolicited_error_is_a_server_error_event(ref: str | None) -> None:
    protocol = opened()
    fields: dict[str, object] = {
        "type": "error",
        "code": "bad_frame",
        "message": "m",
        "retryable": False,
    }
    if ref is not None:
        fields["ref"] = ref
    protocol.receive_data(json.dumps(fields))
    [event] = protocol.events_received()
    assert event == ServerError("bad_frame", "m", False, ref)


# -- ping ----------------------------------------------------------------------------


def test_ping_pong() -> None:
    protocol = opened()
    request_id = protocol.ping()
    assert sent(protocol) == [{"type": "ping", "id": request_id}]
    protocol.receive_data(frame(type="pong", id=request_id))
    assert protocol.events_received() == [Pong(request_id)]


def test_error_answering_a_ping() -> None:
    protocol = opened()
    request_id = protocol.ping()
    protocol.receive_data(
        frame(type="error", code="rate_limited", message="m", ref=request_id, retryable=True)
    )
    [event] = protocol.events_received()
    assert isinstance(event, RequestFailed)
    assert event.ref == request_id


def test_request_ids_are_unique() -> None:
    protocol = opened()
    ids = {protocol.ping() for _ in range(100)}
    assert len(ids) == 100


# -- fire-and-forget frames ------------------------------------------------------------


def test_cursor_typing_and_presence_frames() -> None:
    protocol = opened()
    protocol.delivered("c1", 3)
    protocol.read("c1", 2)
    protocol.typing("c1", "start")
    protocol.presence("away")
    protocol.presence_subscribe(["u2", "u3"])
    assert sent(protocol) == [
        {"type": "delivered", "conversation_id": "c1", "seq": 3},
        {"type": "read", "conversation_id": "c1", "seq": 2},
        {"type": "typing", "conversation_id": "c1", "state": "start"},
        {"type": "presence", "status": "away"},
        {"type": "presence_subscribe", "user_ids": ["u2", "u3"]},
    ]


def test_invalid_arguments_raise_value_error() -> None:
    protocol = opened()
    with pytest.raises(ValueError, match="seq"):
        protocol.delivered("c1", -1)
    with pytest.raises(ValueError, match="seq"):
        protocol.read("c1", -1)
    with pytest.raises(ValueError, match="state"):
        protocol.typing("c1", "maybe")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="status"):
        protocol.presence("offline")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="limit"):
        protocol.sync(limit=0)
    assert protocol.data_to_send() == []


# -- incoming frames ----------------------------------------------------------------------


SERVER_FRAMES: list[tuple[dict[str, object], type]] = [
    (
        {
            "type": "receipt",
            "conversation_id": "c",
            "user_id": "u",
            "delivered_seq": 2,
            "read_seq": 1,
        },
        Receipt,
    ),
    (
        {
            "type": "receipt_summary",
            "conversation_id": "c",
            "seq": 9,
            "delivered_count": 3,
            "read_count": 2,
            "members": 40,
        },
        ReceiptSummary,
    ),
    (
        {
            "type": "typing",
            "conversation_id": "c",
            "user_id": "u",
            "state": "start",
            "expires_ms": 4,
        },
        Typing,
    ),
    ({"type": "presence", "user_id": "u", "status": "offline", "last_seen": 5}, Presence),
    ({"type": "presence", "user_id": "u", "status": "online"}, Presence),
    ({"type": "reconnect", "after_ms": 1200, "reason": "draining"}, Reconnect),
    ({"type": "pong", "id": "nobody"}, Pong),
]


@pytest.mark.parametrize(("data", "kind"), SERVER_FRAMES)
def test_server_frames_decode_to_their_struct(data: dict[str, object], kind: type) -> None:
    protocol = opened()
    protocol.receive_data(json.dumps(dict(data, extra_field={"ignored": True})))
    [event] = protocol.events_received()
    assert isinstance(event, kind)
    expected = {k: v for k, v in data.items() if k != "type"}
    assert {k: getattr(event, k) for k in expected} == expected


def test_typing_expiry_defaults_to_protocol_ttl() -> None:
    protocol = opened()
    protocol.receive_data(frame(type="typing", conversation_id="c", user_id="u", state="stop"))
    [event] = protocol.events_received()
    assert isinstance(event, Typing)
    assert event.expires_ms == 5000


def test_unknown_frame_type_is_an_event_not_an_exception() -> None:
    protocol = opened()
    protocol.receive_data(frame(type="hologram", depth=3))
    [event] = protocol.events_received()
    assert event == UnknownFrame("hologram", {"type": "hologram", "depth": 3})
    assert state_of(protocol) is State.OPEN


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"no_type": 1}', "no string field 'type'"),
        (b'{"type": 5}', "no string field 'type'"),
        (b'{"type": "msg", "conversation_id": "c"}', "invalid msg frame"),
        (b'{"type": "ack", "client_msg_id": 1}', "invalid ack frame"),
    ],
)
def test_broken_frames_are_protocol_violations(data: bytes, reason: str) -> None:
    protocol = opened()
    protocol.receive_data(data)
    [event] = protocol.events_received()
    assert isinstance(event, ProtocolViolation)
    assert reason in event.reason
    assert event.data == data
    assert state_of(protocol) is State.OPEN


def test_str_input_is_accepted() -> None:
    protocol = opened()
    protocol.receive_data(msg("c1", 1).decode())
    [event] = protocol.events_received()
    assert isinstance(event, Message)


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    protocol = opened()
    protocol.receive_data(data)
    assert len(protocol.events_received()) <= 1


# -- messages: dedup and cursors ----------------------------------------------------------


def test_message_event_and_content_helpers() -> None:
    protocol = opened()
    protocol.receive_data(msg("c1", 1, "hello"))
    [event] = protocol.events_received()
    assert isinstance(event, Message)
    assert (event.conversation_id, event.seq, event.sender_id) == ("c1", 1, "u2")
    assert event.kind == "text"
    assert event.text == "hello"
    other = msgspec.structs.replace(event, content={"kind": "reaction", "emoji": "+1"})
    assert other.kind == "reaction"
    assert other.text is None


def test_duplicate_messages_are_dropped() -> None:
    protocol = opened()
    for _ in range(3):
        protocol.receive_data(msg("c1", 1))
    protocol.receive_data(msg("c2", 1))
    events = protocol.events_received()
    assert [(e.conversation_id, e.seq) for e in events if isinstance(e, Message)] == [
        ("c1", 1),
        ("c2", 1),
    ]
    assert protocol.duplicates_dropped == 2
    assert protocol.cursors.snapshot() == {"c1": 1, "c2": 1}


def test_out_of_order_messages_move_cursor_when_gap_fills() -> None:
    protocol = opened()
    for seq in (1, 2, 5, 4):
        protocol.receive_data(msg("c1", seq))
    assert protocol.cursors.cursor("c1") == 2
    assert protocol.cursors.gaps("c1") == [(3, 3)]
    protocol.receive_data(msg("c1", 3))
    assert protocol.cursors.cursor("c1") == 5
    assert protocol.cursors.gaps("c1") == []
    assert len(protocol.events_received()) == 5


def test_seeded_cursors_drop_messages_already_held() -> None:
    protocol = opened(Cursors({"c1": 10}))
    protocol.receive_data(msg("c1", 10))
    protocol.receive_data(msg("c1", 11))
    [event] = protocol.events_received()
    assert isinstance(event, Message)
    assert event.seq == 11
    assert protocol.cursors.cursor("c1") == 11


def test_cursors_survive_into_the_next_connection() -> None:
    first = opened()
    first.receive_data(msg("c1", 1))
    first.connection_lost(1006)
    second = opened(first.cursors)
    second.receive_data(msg("c1", 1))
    second.receive_data(msg("c1", 2))
    assert [e.seq for e in second.events_received() if isinstance(e, Message)] == [2]


# -- sync ------------------------------------------------------------------------------------


def sync_done(request_id: str, token: str, *, more: bool, convs: list[dict[str, object]]) -> bytes:
    return frame(type="sync_done", id=request_id, token=token, conversations=convs, more=more)


def conv(cid: str, last: int) -> dict[str, object]:
    return {"conversation_id": cid, "last_seq": last, "delivered_seq": 0, "read_seq": 0}


def test_sync_single_page_collects_messages_instead_of_events() -> None:
    protocol = opened()
    request_id = protocol.sync()
    assert sent(protocol) == [{"type": "sync", "id": request_id}]
    assert syncing(protocol)
    for seq in (2, 1):  # out of order on the wire
        protocol.receive_data(msg("b", seq))
    protocol.receive_data(msg("a", 1))
    protocol.receive_data(msg("b", 1))  # duplicate
    assert protocol.events_received() == []
    protocol.receive_data(sync_done(request_id, "t1", more=False, convs=[conv("b", 2)]))
    [event] = protocol.events_received()
    assert isinstance(event, SyncComplete)
    assert event.request_id == request_id
    result = event.result
    assert result.token == "t1"
    assert [(m.conversation_id, m.seq) for m in result.messages] == [("b", 1), ("b", 2), ("a", 1)]
    assert [c.conversation_id for c in result.conversations] == ["b"]
    assert not syncing(protocol)
    # Live messages are events again.
    protocol.receive_data(msg("b", 3))
    [live] = protocol.events_received()
    assert isinstance(live, Message)


def test_sync_sends_explicit_cursors_and_records_them() -> None:
    protocol = opened()
    request_id = protocol.sync({"c1": 4}, since="t0", limit=10)
    assert sent(protocol) == [
        {"type": "sync", "id": request_id, "since": "t0", "cursors": {"c1": 4}, "limit": 10}
    ]
    assert protocol.cursors.cursor("c1") == 4
    protocol.receive_data(msg("c1", 4))  # already held by the caller's word
    protocol.receive_data(msg("c1", 5))
    protocol.receive_data(sync_done(request_id, "t1", more=False, convs=[]))
    [event] = protocol.events_received()
    assert isinstance(event, SyncComplete)
    assert [m.seq for m in event.result.messages] == [5]


def test_sync_follows_more_with_since_and_cursors() -> None:
    protocol = opened()
    request_id = protocol.sync({"a": 0}, limit=2)
    sent(protocol)
    protocol.receive_data(msg("a", 1))
    protocol.receive_data(msg("a", 2))
    protocol.receive_data(sync_done(request_id, "t1", more=True, convs=[conv("a", 3)]))
    assert protocol.events_received() == []
    [page2] = sent(protocol)
    assert page2["type"] == "sync"
    assert page2["id"] != request_id
    assert page2["since"] == "t1"
    assert page2["cursors"] == {"a": 2}
    assert page2["limit"] == 2
    protocol.receive_data(msg("a", 3))
    protocol.receive_data(msg("b", 7))
    protocol.receive_data(sync_done(str(page2["id"]), "t2", more=True, convs=[conv("b", 7)]))
    [page3] = sent(protocol)
    assert page3["since"] == "t2"
    assert page3["cursors"] == {"a": 3, "b": 7}
    protocol.receive_data(
        sync_done(str(page3["id"]), "t3", more=False, convs=[conv("a", 3), conv("b", 7)])
    )
    [event] = protocol.events_received()
    assert isinstance(event, SyncComplete)
    assert event.request_id == request_id
    assert event.result.token == "t3"
    assert event.result.pages == 3
    assert [(m.conversation_id, m.seq) for m in event.result.messages] == [
        ("a", 1),
        ("a", 2),
        ("a", 3),
        ("b", 7),
    ]
    assert {c.conversation_id: c.last_seq for c in event.result.conversations} == {"a": 3, "b": 7}


def test_continuation_cursor_ignores_a_live_message_past_a_gap() -> None:
    protocol = opened()
    request_id = protocol.sync()
    sent(protocol)
    protocol.receive_data(msg("a", 41))
    protocol.receive_data(msg("a", 42))
    protocol.receive_data(msg("a", 50))  # live, overtook the sync answer
    protocol.receive_data(sync_done(request_id, "t1", more=True, convs=[conv("a", 50)]))
    [page2] = sent(protocol)
    assert page2["cursors"] == {"a": 42}


def test_second_sync_while_one_is_pending_raises() -> None:
    protocol = opened()
    protocol.sync()
    with pytest.raises(InvalidStateError):
        protocol.sync()


def test_sync_done_without_id_answers_the_pending_sync() -> None:
    protocol = opened()
    protocol.sync()
    protocol.receive_data(frame(type="sync_done", token="t", conversations=[], more=False))
    [event] = protocol.events_received()
    assert isinstance(event, SyncComplete)


def test_unexpected_sync_done_is_a_protocol_violation() -> None:
    protocol = opened()
    protocol.receive_data(sync_done("nope", "t", more=False, convs=[]))
    [event] = protocol.events_received()
    assert isinstance(event, ProtocolViolation)


def test_sync_error_fails_the_request_and_releases_collected_messages() -> None:
    protocol = opened()
    request_id = protocol.sync()
    protocol.receive_data(msg("a", 1))
    protocol.receive_data(
        frame(type="sync_done", id=request_id, token="t", conversations=[], more=True)
    )
    page2 = str(sent(protocol)[-1]["id"])
    protocol.receive_data(
        frame(type="error", code="unavailable", message="m", ref=page2, retryable=True)
    )
    events = protocol.events_received()
    assert isinstance(events[0], Message)
    assert isinstance(events[1], RequestFailed)
    assert events[1].ref == request_id
    assert not syncing(protocol)


def test_connection_lost_during_sync_releases_collected_messages() -> None:
    protocol = opened()
    protocol.sync()
    protocol.receive_data(msg("a", 1))
    protocol.connection_lost(1006, "")
    events = protocol.events_received()
    assert isinstance(events[0], Message)
    assert events[1] == Closed(1006, "")


def test_cancelled_sync_ignores_its_late_answers() -> None:
    protocol = opened()
    request_id = protocol.sync()
    protocol.receive_data(msg("a", 1))
    protocol.cancel_sync()
    [released] = protocol.events_received()
    assert isinstance(released, Message)
    protocol.receive_data(msg("a", 2))
    protocol.receive_data(sync_done(request_id, "t", more=False, convs=[]))
    [live] = protocol.events_received()
    assert isinstance(live, Message)
    assert live.seq == 2
    # A new sync can start.
    protocol.sync()


# -- Cursors ------------------------------------------------------------------------------------


def test_cursors_basics() -> None:
    cursors = Cursors()
    assert cursors.cursor("x") == 0
    assert cursors.gaps("x") == []
    assert cursors.observe("x", 1)
    assert not cursors.observe("x", 1)
    cursors.set("x", 10)
    assert cursors.cursor("x") == 10
    cursors.set("x", 3)  # never moves back
    assert cursors.cursor("x") == 10
    assert cursors.holds("x", 7)
    assert not cursors.holds("x", 11)
    assert not cursors.holds("y", 1)
    with pytest.raises(ValueError, match="seq"):
        cursors.set("x", -1)


def test_cursor_set_below_a_late_start_does_not_lower_it() -> None:
    cursors = Cursors()
    for seq in (41, 42, 43):
        cursors.observe("x", seq)
    assert cursors.cursor("x") == 43
    cursors.set("x", 10)
    assert cursors.cursor("x") == 43


@given(st.lists(st.integers(min_value=1, max_value=60), max_size=200))
def test_cursors_observe_each_seq_once(seqs: list[int]) -> None:
    cursors = Cursors()
    fresh = [seq for seq in seqs if cursors.observe("c", seq)]
    assert sorted(fresh) == sorted(set(seqs))
    held = set(seqs)
    if held:
        low = min(held)
        top = low
        while top + 1 in held:
            top += 1
        assert cursors.cursor("c") == top
        missing = [s for s in range(low, max(held) + 1) if s not in held]
        gap_seqs = [s for lo, hi in cursors.gaps("c") for s in range(lo, hi + 1)]
        assert gap_seqs == missing
    else:
        assert cursors.cursor("c") == 0
    for seq in range(1, 62):
        assert cursors.holds("c", seq) == (seq in held)


def test_notice_is_an_event_and_kept_and_reconcile_is_matched_by_id() -> None:
    protocol = ClientProtocol()
    protocol.hello("t")
    protocol.receive_data(json.dumps(WELCOME))
    protocol.receive_data(
        frame(type="notice", code="restored", from_ts=1, to_ts=2, text="Messages ... lost.")
    )
    events = protocol.events_received()
    notice = Notice("restored", "Messages ... lost.", 1, 2)
    assert events[-1] == notice
    assert protocol.notice == notice
    protocol.data_to_send()
    report = ReconcileRequest("e1", [ReconcileConversation("c1", 2, 5, 1, 2)])
    rid = protocol.reconcile(report)
    (written,) = sent(protocol)
    assert written == {
        "type": "reconcile",
        "epoch": "e1",
        "conversations": [
            {
                "conversation_id": "c1",
                "server_last_seq": 2,
                "held_last_seq": 5,
                "own": 1,
                "others": 2,
            }
        ],
        "id": rid,
    }
    protocol.receive_data(frame(type="error", code="not_member", message="x", ref=rid))
    (failed,) = protocol.events_received()
    assert isinstance(failed, RequestFailed)
    assert failed.ref == rid
    rid = protocol.reconcile(report)
    protocol.receive_data(frame(type="reconciled", epoch="e1", conversations=1, id=rid))
    assert protocol.events_received() == [Reconciled("e1", 1, rid)]
