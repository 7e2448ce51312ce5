"""Every WebSocket rejection of docs/protocol.md, one test each.

Each test asserts the exact ``error`` frame (code, retryable, ref, and
retry_after_ms for rate_limited), that nothing stored changed, and that the
same connection (where it stays open) and other clients keep working.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from tests.badinput.support import (
    World,
    expect_closed,
    expect_error,
    rejected_on_open_connection,
    unique,
    world_on,
)
from tests.conftest import ServerFactory
from tests.wire import Raw

CLOSE_TOO_BIG = 1009
CLOSE_UNAUTHORIZED = 4001
CLOSE_HEARTBEAT_TIMEOUT = 4003
CLOSE_HELLO_TIMEOUT = 4004


# -- not JSON, not an object, no usable type -------------------------------------


async def test_not_json_is_bad_frame(world: World) -> None:
    await rejected_on_open_connection(world, '{"type": "send", nope', "bad_frame", None)


@pytest.mark.parametrize(
    "text",
    ['[{"type": "ping", "id": "r1"}]', "42", '"ping"', "null", "true", "-1.5e3"],
    ids=["array", "number", "string", "null", "bool", "float"],
)
async def test_json_that_is_not_an_object_is_bad_frame(world: World, text: str) -> None:
    await rejected_on_open_connection(world, text, "bad_frame", None)


async def test_missing_type_is_bad_frame(world: World) -> None:
    frame = {"id": "r-missing", "conversation_id": world.cid, "client_msg_id": "c1"}
    await rejected_on_open_connection(world, frame, "bad_frame", "r-missing")


@pytest.mark.parametrize("kind", [5, None, ["send"], {"send": 1}, True])
async def test_type_not_a_string_is_bad_frame(world: World, kind: Any) -> None:
    frame = {
        "type": kind,
        "conversation_id": world.cid,
        "client_msg_id": "cm-type",
        "content": {"text": "x"},
    }
    # No id: the ref is the client_msg_id.
    await rejected_on_open_connection(world, frame, "bad_frame", "cm-type")


async def test_unknown_type_keeps_the_connection_open(world: World) -> None:
    await rejected_on_open_connection(
        world, {"type": "dance", "id": "r-dance", "moves": 3}, "unknown_type", "r-dance"
    )


async def test_unknown_type_without_id_has_no_ref(world: World) -> None:
    await rejected_on_open_connection(world, {"type": "SEND"}, "unknown_type", None)


# -- fields of the wrong type ------------------------------------------------------


def _wrong_fields(cid: str) -> list[tuple[dict[str, Any], str | None]]:
    return [
        ({"type": "delivered", "id": "w1", "conversation_id": cid, "seq": "1"}, "w1"),
        ({"type": "read", "id": "w2", "conversation_id": cid, "seq": -1}, "w2"),
        ({"type": "read", "conversation_id": cid, "seq": 1.5}, None),
        (
            {"type": "send", "conversation_id": cid, "client_msg_id": "w3", "content": "hi"},
            "w3",
        ),
        (
            {"type": "send", "conversation_id": cid, "client_msg_id": "w4", "content": ["hi"]},
            "w4",
        ),
        ({"type": "send", "id": "w5", "client_msg_id": "w5c", "content": {"text": "x"}}, "w5"),
        (
            {"type": "send", "id": "w6", "conversation_id": 7, "client_msg_id": "c", "content": {}},
            "w6",
        ),
        # client_msg_id of the wrong type and no id: the error answers no usable ref.
        (
            {"type": "send", "conversation_id": cid, "client_msg_id": 9, "content": {"text": "x"}},
            None,
        ),
        ({"type": "send", "id": "w7", "conversation_id": cid, "content": {"text": "x"}}, "w7"),
        ({"type": "typing", "id": "w8", "conversation_id": cid, "state": "maybe"}, "w8"),
        ({"type": "presence", "id": "w9", "status": "offline"}, "w9"),
        ({"type": "presence_subscribe", "id": "w10", "user_ids": "bob"}, "w10"),
        ({"type": "sync", "id": "w11", "cursors": [1, 2]}, "w11"),
        ({"type": "sync", "id": "w12", "limit": 0}, "w12"),
        ({"type": "ping", "id": 12}, None),
    ]


@pytest.mark.parametrize("case", range(15))
async def test_wrong_field_types_are_bad_frame(world: World, case: int) -> None:
    cases = _wrong_fields(world.cid)
    assert len(cases) == 15
    frame, ref = cases[case]
    await rejected_on_open_connection(world, frame, "bad_frame", ref)


# -- content ----------------------------------------------------------------------


async def test_content_over_max_content_bytes_is_too_large(
    server_factory: ServerFactory, session: aiohttp.ClientSession
) -> None:
    world = await world_on(server_factory, session, max_content_bytes=1000)
    big = {"text": "x" * 1200}
    await rejected_on_open_connection(
        world,
        {
            "type": "send",
            "id": "big1",
            "conversation_id": world.cid,
            "client_msg_id": "b1",
            "content": big,
        },
        "too_large",
        "big1",
    )
    await rejected_on_open_connection(
        world,
        {"type": "send", "conversation_id": world.cid, "client_msg_id": "b2", "content": big},
        "too_large",
        "b2",
    )


async def test_content_at_the_limit_is_accepted(
    server_factory: ServerFactory, session: aiohttp.ClientSession
) -> None:
    world = await world_on(server_factory, session, max_content_bytes=1000)
    content = '{"text":"' + "y" * (1000 - len('{"text":""}')) + '"}'
    assert len(content) == 1000
    raw = await world.raw(world.alice)
    await raw.send_text(
        f'{{"type":"send","conversation_id":"{world.cid}",'
        f'"client_msg_id":"edge","content":{content}}}'
    )
    ack = await raw.recv_type("ack")
    assert ack["seq"] == 1
    await raw.close()


async def test_frame_over_max_frame_bytes_closes_with_1009(
    server_factory: ServerFactory, session: aiohttp.ClientSession
) -> None:
    world = await world_on(server_factory, session, max_frame_bytes=4096)
    before = await world.snapshot()
    raw = await world.raw(world.alice)
    # A valid send (content far below max_content_bytes) in a frame over the limit.
    await raw.send(
        {
            "type": "send",
            "id": "huge",
            "conversation_id": world.cid,
            "client_msg_id": "huge",
            "content": {"text": "z" * 5000},
        }
    )
    await expect_closed(raw, CLOSE_TOO_BIG)
    assert await world.snapshot() == before
    await world.chat_works()


async def test_system_content_kind_is_bad_frame(world: World) -> None:
    await rejected_on_open_connection(
        world,
        {
            "type": "send",
            "id": "sys1",
            "conversation_id": world.cid,
            "client_msg_id": "sys1c",
            "content": {"kind": "member_added", "user_ids": [world.carol.user_id]},
        },
        "bad_frame",
        "sys1",
    )


@pytest.mark.parametrize(
    "content",
    [{}, {"kind": "text"}, {"kind": "text", "text": None}, {"text": 5}, {"body": "hi"}],
)
async def test_text_content_without_text_is_bad_frame(
    world: World, content: dict[str, Any]
) -> None:
    await rejected_on_open_connection(
        world,
        {"type": "send", "conversation_id": world.cid, "client_msg_id": "nt", "content": content},
        "bad_frame",
        "nt",
    )


async def test_content_error_ref_is_the_id_even_when_empty(world: World) -> None:
    """docs/protocol.md: ref is the ``id`` of the frame, else its client_msg_id. An
    empty string is a valid id (the schema allows it, and every other rejection
    echoes it), so a content rejection must echo it too."""
    await rejected_on_open_connection(
        world,
        {
            "type": "send",
            "id": "",
            "conversation_id": world.cid,
            "client_msg_id": "empty-id",
            "content": {"kind": "member_added"},
        },
        "bad_frame",
        "",
    )


# -- membership -----------------------------------------------------------------------


async def test_send_to_a_conversation_of_others_is_not_member(world: World) -> None:
    await rejected_on_open_connection(
        world,
        {
            "type": "send",
            "id": "nm1",
            "conversation_id": world.foreign,
            "client_msg_id": unique("nm-"),
            "content": {"text": "let me in"},
        },
        "not_member",
        "nm1",
    )
    assert await world.history(world.bob, world.foreign) == []


async def test_send_to_an_unknown_conversation_is_not_member(world: World) -> None:
    cmid = unique("nx-")
    await rejected_on_open_connection(
        world,
        {
            "type": "send",
            "conversation_id": "c_does_not_exist",
            "client_msg_id": cmid,
            "content": {"text": "hello?"},
        },
        "not_member",
        cmid,
    )


@pytest.mark.parametrize("kind", ["delivered", "read"])
@pytest.mark.parametrize("with_id", [True, False])
async def test_cursor_for_a_conversation_of_others_is_not_member(
    world: World, kind: str, with_id: bool
) -> None:
    # Give the foreign conversation a message, so there is a cursor to move.
    bob = await world.raw(world.bob)
    await bob.send(
        {
            "type": "send",
            "conversation_id": world.foreign,
            "client_msg_id": unique("f-"),
            "content": {"text": "private"},
        }
    )
    await bob.recv_type("ack")
    await bob.close()
    frame: dict[str, Any] = {"type": kind, "conversation_id": world.foreign, "seq": 1}
    if with_id:
        frame["id"] = "cur1"
    await rejected_on_open_connection(world, frame, "not_member", "cur1" if with_id else None)


@pytest.mark.parametrize("kind", ["delivered", "read"])
async def test_cursor_for_an_unknown_conversation_is_not_member(world: World, kind: str) -> None:
    await rejected_on_open_connection(
        world,
        {"type": kind, "id": "cu", "conversation_id": "c_nope", "seq": 3},
        "not_member",
        "cu",
    )


# -- hello --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        {"type": "ping"},
        {"type": "sync"},
        {"type": "dance"},
        "not json at all",
        "[1, 2]",
        {"token": "tdg_x"},
    ],
    ids=["ping", "sync", "unknown", "not-json", "array", "no-type"],
)
async def test_any_frame_before_hello_is_unauthorized_then_4001(
    world: World, payload: str | dict[str, Any]
) -> None:
    before = await world.snapshot()
    raw = await world.open()
    if isinstance(payload, str):
        await raw.send_text(payload)
    else:
        await raw.send(payload)
    await expect_error(raw, "unauthorized")
    await expect_closed(raw, CLOSE_UNAUTHORIZED)
    assert await world.snapshot() == before
    await world.chat_works()


async def test_send_before_hello_is_unauthorized_and_stores_nothing(world: World) -> None:
    """The error answers the send: its ref is the send's id (docs/protocol.md, ``error``)."""
    before = await world.snapshot()
    raw = await world.open()
    await raw.send(
        {
            "type": "send",
            "id": "early",
            "conversation_id": world.cid,
            "client_msg_id": "early-c",
            "content": {"text": "too soon"},
        }
    )
    await expect_error(raw, "unauthorized", "early")
    await expect_closed(raw, CLOSE_UNAUTHORIZED)
    assert await world.snapshot() == before
    await world.chat_works()


async def test_ping_before_hello_error_refs_the_ping(world: World) -> None:
    """The unauthorized error answers the ping, so it carries the ping's id as ref."""
    raw = await world.open()
    await raw.send({"type": "ping", "id": "p-early"})
    await expect_error(raw, "unauthorized", "p-early")
    await expect_closed(raw, CLOSE_UNAUTHORIZED)


@pytest.mark.parametrize(
    "token",
    ["", "garbage", "tdg_" + "A" * 43, "tdg_" + "x" * 200],
    ids=["empty", "garbage", "unknown", "too-long"],
)
async def test_hello_with_a_bad_token_is_unauthorized_then_4001(world: World, token: str) -> None:
    before = await world.snapshot()
    raw = await world.open()
    await raw.send({"type": "hello", "id": "h1", "token": token})
    await expect_error(raw, "unauthorized", "h1")
    await expect_closed(raw, CLOSE_UNAUTHORIZED)
    assert await world.snapshot() == before
    await world.chat_works()


@pytest.mark.parametrize(
    "hello",
    [{"type": "hello"}, {"type": "hello", "token": 5}, {"type": "hello", "token": None}],
    ids=["missing", "number", "null"],
)
async def test_hello_without_a_string_token_is_unauthorized_then_4001(
    world: World, hello: dict[str, Any]
) -> None:
    raw = await world.open()
    await raw.send(hello)
    await expect_error(raw, "unauthorized")
    await expect_closed(raw, CLOSE_UNAUTHORIZED)
    await world.chat_works()


async def test_hello_with_a_revoked_token_is_unauthorized_then_4001(world: World) -> None:
    device = await world.http.login(world.alice.username, "doomed")
    status, _ = await world.http.call("POST", "/v1/auth/logout", device.token)
    assert status == 204
    before = await world.snapshot()
    raw = await world.open()
    await raw.send({"type": "hello", "token": device.token})
    await expect_error(raw, "unauthorized")
    await expect_closed(raw, CLOSE_UNAUTHORIZED)
    assert await world.snapshot() == before
    # alice's other device is untouched.
    await world.chat_works()


async def test_second_hello_is_bad_frame(world: World) -> None:
    await rejected_on_open_connection(
        world, {"type": "hello", "id": "h2", "token": world.alice.token}, "bad_frame", "h2"
    )


async def test_second_hello_with_another_users_token_is_bad_frame(world: World) -> None:
    """A second hello cannot switch the connection to another user."""
    raw = await world.raw(world.alice)
    await raw.send({"type": "hello", "token": world.bob.token})
    await expect_error(raw, "bad_frame")
    await world.chat_works(raw)  # still alice: her ack comes back on this connection
    await raw.close()


# -- binary frames -------------------------------------------------------------------------


async def test_binary_frame_is_bad_frame(world: World) -> None:
    before = await world.snapshot()
    raw = await world.raw(world.alice)
    await raw.ws.send_bytes(b'{"type": "ping", "id": "bin"}')
    await expect_error(raw, "bad_frame")
    await world.ping_works(raw)
    assert await world.snapshot() == before
    await world.chat_works(raw)
    await raw.close()


async def test_binary_frame_before_hello_is_unauthorized_then_4001(world: World) -> None:
    """docs/protocol.md: "any frame before hello" is unauthorized, then close 4001."""
    raw = await world.open()
    await raw.ws.send_bytes(b'{"type": "hello"}')
    await expect_error(raw, "unauthorized")
    await expect_closed(raw, CLOSE_UNAUTHORIZED)


# -- sync tokens ------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["-1", "", "abc", "\u00b2", "\u2460", "9" * 30], ids=repr)
async def test_malformed_sync_token_is_bad_frame(world: World, version: str) -> None:
    """A ``since`` the server cannot have issued is the client's error (bad_frame),
    never ``internal``: including unicode digits ("²", "①") and numbers too large
    for the store."""
    raw = await world.raw(world.alice)
    await raw.send({"type": "sync"})
    done = await raw.recv_type("sync_done")
    epoch = done["token"].rpartition(".")[0]
    await raw.close()
    await rejected_on_open_connection(
        world, {"type": "sync", "id": "sy", "since": f"{epoch}.{version}"}, "bad_frame", "sy"
    )


# -- rate limits -------------------------------------------------------------------------------


async def test_send_rate_limit_then_the_same_send_succeeds(
    server_factory: ServerFactory, session: aiohttp.ClientSession
) -> None:
    world = await world_on(server_factory, session, send_rate_per_s=1, send_burst=3)
    raw = await world.raw(world.alice)
    bob = await world.raw(world.bob)

    def send(n: int) -> dict[str, Any]:
        return {
            "type": "send",
            "id": f"rl{n}",
            "conversation_id": world.cid,
            "client_msg_id": f"rl-c{n}",
            "content": {"text": f"n{n}"},
        }

    for n in (1, 2, 3):
        await raw.send(send(n))
        ack = await raw.recv_type("ack")
        assert (ack["id"], ack["seq"]) == (f"rl{n}", n)
    before = await world.snapshot()
    await raw.send(send(4))
    err = await expect_error(raw, "rate_limited", "rl4", retryable=True)
    assert await world.snapshot() == before
    # The limit is per user: bob is not slowed by alice.
    await bob.send(
        {
            "type": "send",
            "id": "b",
            "conversation_id": world.cid,
            "client_msg_id": "b1",
            "content": {"text": "me"},
        }
    )
    assert (await bob.recv_type("ack"))["seq"] == 4
    # Resending the same frame after retry_after_ms succeeds.
    await asyncio.sleep(err["retry_after_ms"] / 1000)
    await raw.send(send(4))
    ack = await raw.recv_type("ack")
    assert ack["id"] == "rl4"
    assert ack["client_msg_id"] == "rl-c4"
    assert ack["seq"] == 5
    assert ack["duplicate"] is False
    history = await world.history(world.alice, world.cid)
    assert [m["client_msg_id"] for m in history] == ["rl-c1", "rl-c2", "rl-c3", "b1", "rl-c4"]
    await raw.close()
    await bob.close()


async def test_frame_rate_limit_per_connection(
    server_factory: ServerFactory, session: aiohttp.ClientSession
) -> None:
    world = await world_on(server_factory, session, frame_rate_per_s=2, frame_burst=4)
    raw = await world.raw(world.alice)
    for n in range(4):
        await raw.send({"type": "ping", "id": f"fp{n}"})
        assert await raw.recv() == {"type": "pong", "id": f"fp{n}"}
    before = await world.snapshot()
    await raw.send({"type": "ping", "id": "fp-over"})
    await expect_error(raw, "rate_limited", "fp-over", retryable=True)
    await raw.send(
        {
            "type": "send",
            "conversation_id": world.cid,
            "client_msg_id": "fr-send",
            "content": {"text": "limited"},
        }
    )
    err = await expect_error(raw, "rate_limited", "fr-send", retryable=True)
    assert await world.snapshot() == before
    # The limit is per connection: another connection of the same user is not slowed.
    await world.chat_works()
    await asyncio.sleep(err["retry_after_ms"] / 1000)
    await world.chat_works(raw)
    await raw.close()


async def test_invalid_frames_count_against_the_frame_rate_limit(
    server_factory: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """frame_rate_per_s / frame_burst bound "all frames per connection": a client
    flooding garbage must be slowed like one flooding pings, else every invalid
    frame costs a generic decode and an error write without any bound."""
    world = await world_on(server_factory, session, frame_rate_per_s=0.5, frame_burst=4)
    raw = await world.raw(world.alice)
    for _ in range(4):
        await raw.send_text("garbage")
        await expect_error(raw, "bad_frame")
    await raw.send({"type": "ping", "id": "after-garbage"})
    await expect_error(raw, "rate_limited", "after-garbage", retryable=True)
    await raw.close()


# -- timeouts -----------------------------------------------------------------------------------


async def test_hello_timeout_closes_with_4004(
    server_factory: ServerFactory, session: aiohttp.ClientSession
) -> None:
    world = await world_on(server_factory, session, hello_timeout_ms=300, heartbeat_ms=400)
    raw = await world.open()
    await expect_closed(raw, CLOSE_HELLO_TIMEOUT, timeout=5.0)
    await world.chat_works()


async def test_heartbeat_timeout_closes_a_silent_connection_with_4003(
    server_factory: ServerFactory, session: aiohttp.ClientSession
) -> None:
    world = await world_on(server_factory, session, heartbeat_ms=200)
    raw, welcome = await Raw.connect(session, world.server.ws_url, world.alice.token)
    assert welcome["heartbeat_ms"] == 200
    await expect_closed(raw, CLOSE_HEARTBEAT_TIMEOUT, timeout=5.0)
    await world.chat_works()


async def test_a_client_that_keeps_pinging_stays_open(
    server_factory: ServerFactory, session: aiohttp.ClientSession
) -> None:
    world = await world_on(server_factory, session, heartbeat_ms=200)
    app_pinger = await world.raw(world.alice)
    ws_pinger = await world.raw(world.alice)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 1.5  # well past the 400 ms idle limit
    n = 0
    while loop.time() < deadline:
        n += 1
        await app_pinger.send({"type": "ping", "id": f"keep{n}"})
        assert await app_pinger.recv(timeout=2.0) == {"type": "pong", "id": f"keep{n}"}
        await ws_pinger.ws.ping()
        await asyncio.sleep(0.1)
    assert not app_pinger.ws.closed
    assert not ws_pinger.ws.closed
    await world.chat_works(app_pinger)
    await world.ping_works(ws_pinger)
    await app_pinger.close()
    await ws_pinger.close()
