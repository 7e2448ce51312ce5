"""TidingsClient against scripted in-process servers: the failure paths a real
server rarely shows on demand (no welcome, load shedding, 4001, silence,
garbage, errors answering a send, a dropped socket)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import WSCloseCode, web
from aiohttp.test_utils import TestServer

from tidings_client import (
    ConnectionClosedError,
    Message,
    ProtocolViolation,
    RequestTimeoutError,
    TidingsClient,
    TidingsClientError,
    UnknownFrame,
)

Script = Callable[[web.WebSocketResponse], Awaitable[None]]
Serve = Callable[[Script], Awaitable[str]]

WELCOME = {
    "type": "welcome",
    "user_id": "u1",
    "device_id": "d1",
    "session_id": "s1",
    "epoch": "e1",
    "heartbeat_ms": 25_000,
    "server_time": 1,
    "limits": {"max_content_bytes": 65536, "max_frame_bytes": 1048576, "typing_ttl_ms": 5000},
}
# Short timeouts: these servers misbehave on purpose.
SHORT_S = 0.3
WAIT_S = 5.0


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start a WebSocket server whose /v1/ws runs the given script after the hello."""
    servers: list[TestServer] = []

    async def start(script: Script) -> str:
        async def handler(request: web.Request) -> web.StreamResponse:
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            hello = await ws.receive_json()
            assert hello["type"] == "hello"
            await script(ws)
            return ws

        app = web.Application()
        app.router.add_get("/v1/ws", handler)
        server = TestServer(app)
        await server.start_server()
        servers.append(server)
        return str(server.make_url("/v1/ws"))

    yield start
    for server in servers:
        await server.close()


async def welcome_then(ws: web.WebSocketResponse, *frames: object) -> None:
    await ws.send_json(WELCOME)
    for frame in frames:
        await ws.send_str(frame if isinstance(frame, str) else json.dumps(frame))


async def hold_open(ws: web.WebSocketResponse) -> None:
    """Keep reading (and ignoring) until the client goes away."""
    async for _ in ws:
        pass


def msg(seq: int) -> dict[str, object]:
    return {
        "type": "msg",
        "conversation_id": "c1",
        "seq": seq,
        "message_id": f"m{seq}",
        "sender_id": "u2",
        "client_msg_id": f"x{seq}",
        "ts": seq,
        "content": {"text": str(seq)},
    }


async def test_no_welcome_times_out(serve: Serve) -> None:
    url = await serve(hold_open)
    with pytest.raises(RequestTimeoutError):
        await TidingsClient.connect(url, "tok", timeout=SHORT_S)


async def test_close_4001_without_error_frame_is_unauthorized(serve: Serve) -> None:
    async def refuse(ws: web.WebSocketResponse) -> None:
        await ws.close(code=4001, message=b"bad token")

    url = await serve(refuse)
    with pytest.raises(TidingsClientError) as info:
        await TidingsClient.connect(url, "tok", timeout=WAIT_S)
    assert info.value.code == "unauthorized"


async def test_error_frame_before_welcome_keeps_its_code(serve: Serve) -> None:
    async def refuse(ws: web.WebSocketResponse) -> None:
        await ws.send_json(
            {"type": "error", "code": "unauthorized", "message": "expired", "retryable": False}
        )
        await ws.close(code=4001)

    url = await serve(refuse)
    with pytest.raises(TidingsClientError) as info:
        await TidingsClient.connect(url, "tok", timeout=WAIT_S)
    assert (info.value.code, info.value.message) == ("unauthorized", "expired")


async def test_load_shedding_503_is_retryable_unavailable() -> None:
    async def shed(request: web.Request) -> web.StreamResponse:
        return web.Response(status=503, headers={"Retry-After": "2"})

    app = web.Application()
    app.router.add_get("/v1/ws", shed)
    server = TestServer(app)
    await server.start_server()
    try:
        with pytest.raises(TidingsClientError) as info:
            await TidingsClient.connect(str(server.make_url("/v1/ws")), "tok", timeout=WAIT_S)
    finally:
        await server.close()
    assert info.value.code == "unavailable"
    assert info.value.retryable
    assert info.value.retry_after_ms == 2000
    assert info.value.status == 503


async def test_unknown_garbage_and_duplicates_reach_events_safely(serve: Serve) -> None:
    async def script(ws: web.WebSocketResponse) -> None:
        await welcome_then(ws, {"type": "hologram", "x": 1}, "{garbage", msg(1), msg(1), msg(2))
        await hold_open(ws)

    url = await serve(script)
    async with await TidingsClient.connect(url, "tok") as client:
        events = [await client.next_event(timeout=WAIT_S) for _ in range(4)]
    assert isinstance(events[0], UnknownFrame)
    assert events[0].type == "hologram"
    assert isinstance(events[1], ProtocolViolation)
    assert [e.seq for e in events[2:] if isinstance(e, Message)] == [1, 2]


async def test_error_answering_a_send_raises_with_retry_hint(serve: Serve) -> None:
    async def script(ws: web.WebSocketResponse) -> None:
        await ws.send_json(WELCOME)
        async for frame in ws:
            data = json.loads(frame.data)
            if data["type"] == "send":
                await ws.send_json(
                    {
                        "type": "error",
                        "code": "rate_limited",
                        "message": "slow down",
                        "ref": data["client_msg_id"],
                        "retryable": True,
                        "retry_after_ms": 120,
                    }
                )

    url = await serve(script)
    async with await TidingsClient.connect(url, "tok") as client:
        with pytest.raises(TidingsClientError) as info:
            await client.send("c1", "hi", timeout=WAIT_S)
    assert (info.value.code, info.value.retryable, info.value.retry_after_ms) == (
        "rate_limited",
        True,
        120,
    )


async def test_send_without_answer_times_out(serve: Serve) -> None:
    async def script(ws: web.WebSocketResponse) -> None:
        await ws.send_json(WELCOME)
        await hold_open(ws)

    url = await serve(script)
    async with await TidingsClient.connect(url, "tok") as client:
        with pytest.raises(RequestTimeoutError) as info:
            await client.send("c1", "hi", timeout=SHORT_S)
        assert info.value.retryable


async def test_dropped_socket_fails_pending_send(serve: Serve) -> None:
    async def script(ws: web.WebSocketResponse) -> None:
        await ws.send_json(WELCOME)
        async for frame in ws:
            if json.loads(frame.data)["type"] == "send":
                await ws.close(code=WSCloseCode.GOING_AWAY)

    url = await serve(script)
    async with await TidingsClient.connect(url, "tok") as client:
        with pytest.raises(ConnectionClosedError) as info:
            await client.send("c1", "hi", timeout=WAIT_S)
        assert info.value.close_code == WSCloseCode.GOING_AWAY
        assert client.closed


async def test_missing_pong_drops_the_connection(serve: Serve) -> None:
    async def script(ws: web.WebSocketResponse) -> None:
        await ws.send_json(dict(WELCOME, heartbeat_ms=100))
        await hold_open(ws)  # never answers ping

    url = await serve(script)
    async with await TidingsClient.connect(url, "tok") as client:
        async with asyncio.timeout(WAIT_S):
            async for _ in client.events():
                pass
        assert client.closed


async def test_sync_timeout_releases_the_sync_slot(serve: Serve) -> None:
    async def script(ws: web.WebSocketResponse) -> None:
        await ws.send_json(WELCOME)
        syncs = 0
        async for frame in ws:
            data = json.loads(frame.data)
            if data["type"] == "sync":
                syncs += 1
                if syncs == 1:
                    await ws.send_json(msg(1))  # then never finishes this sync
                    continue
                await ws.send_json(
                    {
                        "type": "sync_done",
                        "id": data["id"],
                        "token": "t",
                        "conversations": [],
                        "more": False,
                    }
                )

    url = await serve(script)
    async with await TidingsClient.connect(url, "tok") as client:
        with pytest.raises(RequestTimeoutError):
            await client.sync(timeout=SHORT_S)
        # What the abandoned sync collected is not lost: it is an event.
        released = await client.next_event(timeout=WAIT_S)
        assert isinstance(released, Message)
        result = await client.sync(timeout=WAIT_S)
        assert result.messages == []
