"""Message kinds over the SDK's transports, against scripted in-process
servers (no Tidings server): the frames and request bodies the calls write,
and the answers and frames they turn into results and events."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.client.test_connection import WAIT_S, WELCOME, Serve, hold_open
from tidings_client import (
    ConversationState,
    Hidden,
    HiddenSet,
    ReactionCount,
    ResilienceConfig,
    ResilientClient,
    TidingsClient,
    TidingsClientError,
    TidingsHTTP,
    ViewEntry,
)

# -- WebSocket ---------------------------------------------------------------------------


def ack_for(send: dict[str, object], seq: int) -> dict[str, object]:
    return {
        "type": "ack",
        "client_msg_id": send["client_msg_id"],
        "conversation_id": send["conversation_id"],
        "seq": seq,
        "message_id": f"m{seq}",
        "ts": seq,
        "duplicate": False,
        "id": send.get("id"),
    }


async def test_sends_of_each_kind_write_their_content_and_get_acks(serve: Serve) -> None:
    received: list[object] = []

    async def script(ws: web.WebSocketResponse) -> None:
        await ws.send_json(WELCOME)
        seq = 0
        async for raw in ws:
            send = json.loads(raw.data)
            seq += 1
            received.append(send["content"])
            await ws.send_json(ack_for(send, seq))

    url = await serve(script)
    async with TidingsClient.connect(url, "tok", heartbeat=False) as client:
        await client.send("c1", "hi", reply_to=3, mentions=["u2"], mention_all=True)
        await client.send("c1", "fwd", forwarded=True)
        await client.edit("c1", 1, "hi!")
        await client.react("c1", 1, "👍")
        await client.react("c1", 1, "👍", on=False)
        ack = await client.delete("c1", 1)
    assert ack.seq == 6
    assert received == [
        {"text": "hi", "reply_to": 3, "mentions": ["u2"], "mention_all": True},
        {"text": "fwd", "forwarded": True},
        {"kind": "edit", "target": 1, "text": "hi!"},
        {"kind": "reaction", "target": 1, "emoji": "👍", "on": True},
        {"kind": "reaction", "target": 1, "emoji": "👍", "on": False},
        {"kind": "delete", "target": 1},
    ]


async def test_forbidden_answer_raises_with_its_code(serve: Serve) -> None:
    async def script(ws: web.WebSocketResponse) -> None:
        await ws.send_json(WELCOME)
        async for raw in ws:
            send = json.loads(raw.data)
            refusal = {"code": "forbidden", "message": "edit window is over", "retryable": False}
            await ws.send_json({"type": "error", **refusal, "ref": send["client_msg_id"]})

    url = await serve(script)
    async with TidingsClient.connect(url, "tok", heartbeat=False) as client:
        with pytest.raises(TidingsClientError) as info:
            await client.edit("c1", 1, "late", timeout=WAIT_S)
    assert (info.value.code, info.value.retryable) == ("forbidden", False)


HIDDEN = {"type": "hidden", "conversation_id": "c1", "seqs": [4], "hidden": True}
STATE = {
    "type": "conversation_state",
    "conversation_id": "c1",
    "muted_until": None,
    "muted": False,
    "archived": True,
    "pinned": False,
}
EXPECTED_EVENTS = [Hidden("c1", [4], True), ConversationState("c1", archived=True)]


async def test_hidden_and_state_frames_reach_the_client_events(serve: Serve) -> None:
    async def script(ws: web.WebSocketResponse) -> None:
        await ws.send_json(WELCOME)
        await ws.send_json(HIDDEN)
        await ws.send_json(STATE)
        await hold_open(ws)

    url = await serve(script)
    async with TidingsClient.connect(url, "tok", heartbeat=False) as client:
        events = [await client.next_event(WAIT_S), await client.next_event(WAIT_S)]
    assert events == EXPECTED_EVENTS


async def test_hidden_and_state_frames_reach_the_resilient_client_events(serve: Serve) -> None:
    async def script(ws: web.WebSocketResponse) -> None:
        await ws.send_json(WELCOME)
        async for raw in ws:
            request = json.loads(raw.data)
            if request["type"] == "sync":
                done = {"type": "sync_done", "id": request["id"], "token": "t", "more": False}
                await ws.send_json({**done, "conversations": []})
                await ws.send_json(HIDDEN)
                await ws.send_json(STATE)

    url = await serve(script)
    config = ResilienceConfig(backoff_jitter="none")
    async with ResilientClient(url, "tok", config=config, heartbeat=False) as client:
        events: list[Hidden | ConversationState] = []
        while len(events) < len(EXPECTED_EVENTS):
            event = await client.next_event(WAIT_S)
            if isinstance(event, Hidden | ConversationState):
                events.append(event)
    assert events == EXPECTED_EVENTS


async def test_resilient_send_options_are_in_the_outbox_entry() -> None:
    client = ResilientClient("ws://127.0.0.1:9/v1/ws", "tok")  # never started: offline
    try:
        cmid = client.send("c1", "see above", reply_to=2, mentions=["u2"])
        react = client.react("c1", 2, "👀")
        edit = client.edit("c1", 5, "new")
        delete = client.delete("c1", 5)
        contents = {e.client_msg_id: e.content for e in client.pending()}
    finally:
        await client.close()
    assert contents == {
        cmid: {"text": "see above", "reply_to": 2, "mentions": ["u2"]},
        react: {"kind": "reaction", "target": 2, "emoji": "👀", "on": True},
        edit: {"kind": "edit", "target": 5, "text": "new"},
        delete: {"kind": "delete", "target": 5},
    }


# -- HTTP --------------------------------------------------------------------------------

# (method, path, query, JSON body) of every call; the answer (status, JSON body) per path.
Calls = list[tuple[str, str, dict[str, str], object]]
Answers = dict[str, tuple[int, object]]
Api = tuple[TidingsHTTP, Calls, Answers]


@pytest.fixture
async def http() -> AsyncIterator[Api]:
    """A TidingsHTTP on a fake API that records every call and answers with
    ``answers[path]`` (a status and a JSON body)."""
    calls: Calls = []
    answers: Answers = {}

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.json() if request.can_read_body else None
        calls.append((request.method, request.path, dict(request.query), body))
        status, answer = answers[request.path]
        return web.json_response(answer, status=status)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    server = TestServer(app)
    await server.start_server()
    client = TidingsHTTP(str(server.make_url("")), token="tok")
    try:
        yield client, calls, answers
    finally:
        await client.close()
        await server.close()


VIEW_ITEM = {
    "seq": 1,
    "message_id": "m1",
    "sender_id": "u2",
    "client_msg_id": "x1",
    "ts": 10,
    "content": {"text": "hi!", "reply_to": 0},
    "edited": True,
    "edited_ts": 20,
    "deleted": False,
    "reactions": [{"emoji": "👍", "count": 2, "me": True}],
}


async def test_view_asks_for_the_current_view_and_decodes_entries(
    http: Api,
) -> None:
    client, calls, answers = http
    answers["/v1/conversations/c1/messages"] = (200, {"messages": [VIEW_ITEM]})
    entries = await client.view("c1", after_seq=0, limit=10)
    assert calls == [
        (
            "GET",
            "/v1/conversations/c1/messages",
            {"view": "current", "after_seq": "0", "limit": "10"},
            None,
        )
    ]
    assert entries == [
        ViewEntry(
            1,
            "m1",
            "u2",
            "x1",
            10,
            {"text": "hi!", "reply_to": 0},
            edited=True,
            edited_ts=20,
            reactions=(ReactionCount("👍", 2, me=True),),
        )
    ]


async def test_hide_and_hidden(http: Api) -> None:
    client, calls, answers = http
    answers["/v1/conversations/c1/hidden"] = (200, {"conversation_id": "c1", "seqs": [2, 7]})
    assert await client.hide("c1", [7]) == HiddenSet("c1", [2, 7])
    await client.hide("c1", (3,), hidden=False)
    assert await client.hidden("c1") == HiddenSet("c1", [2, 7])
    assert [(c[0], c[3]) for c in calls] == [
        ("POST", {"seqs": [7], "hidden": True}),
        ("POST", {"seqs": [3], "hidden": False}),
        ("GET", None),
    ]


async def test_set_state_sends_only_the_fields_given(
    http: Api,
) -> None:
    client, calls, answers = http
    answer = {**STATE, "muted_until": -1, "muted": True}
    del answer["type"]
    answers["/v1/conversations/c1/state"] = (200, answer)
    state = await client.set_state("c1", muted_until=-1)
    assert state == ConversationState("c1", muted_until=-1, muted=True, archived=True)
    await client.set_state("c1", muted_until=None, pinned=True)
    await client.set_state("c1", archived=False)
    with pytest.raises(ValueError, match="give at least one of"):
        await client.set_state("c1")
    assert [(c[0], c[3]) for c in calls] == [
        ("PUT", {"muted_until": -1}),
        ("PUT", {"muted_until": None, "pinned": True}),
        ("PUT", {"archived": False}),
    ]


GROUP = {
    "conversation_id": "g1",
    "kind": "group",
    "title": "Team",
    "members": [{"user_id": "u1", "role": "admin"}],
    "history": "joined",
    "retention_days": 30,
}


async def test_update_conversation_patches_the_given_settings(
    http: Api,
) -> None:
    client, calls, answers = http
    answers["/v1/conversations/g1"] = (200, GROUP)
    group = await client.update_conversation("g1", history="joined", retention_days=30)
    assert (group.history, group.retention_days) == ("joined", 30)
    await client.update_conversation("g1", title="Team", retention_days=None)
    assert [(c[0], c[3]) for c in calls] == [
        ("PATCH", {"history": "joined", "retention_days": 30}),
        ("PATCH", {"title": "Team", "retention_days": None}),
    ]
    answers["/v1/conversations/g1"] = (
        403,
        {"error": {"code": "forbidden", "message": "admins only", "retryable": False}},
    )
    with pytest.raises(TidingsClientError) as info:
        await client.update_conversation("g1", title="Mine")
    assert (info.value.code, info.value.status) == ("forbidden", 403)


async def test_listing_decodes_new_fields_and_an_older_servers_answer(
    http: Api,
) -> None:
    client, _calls, answers = http
    old = {
        "conversation_id": "c1",
        "kind": "direct",
        "last_seq": 5,
        "delivered_seq": 5,
        "read_seq": 2,
        "unread": 3,
    }
    new = {
        **old,
        "conversation_id": "c2",
        "mentions": 1,
        "muted": True,
        "muted_until": -1,
        "archived": True,
        "pinned": True,
        "history_start": 4,
    }
    answers["/v1/conversations"] = (200, {"conversations": [old, new]})
    older, newer = await client.list_conversations()
    assert (older.mentions, older.muted, older.muted_until, older.history_start) == (
        0,
        False,
        None,
        1,
    )
    assert (newer.mentions, newer.muted, newer.muted_until) == (1, True, -1)
    assert (newer.archived, newer.pinned, newer.history_start) == (True, True, 4)
