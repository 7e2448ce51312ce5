"""The restart storm's lean WebSocket client against a real Tidings server and a
plain aiohttp server: upgrade, text both ways, fragments, ping, close, 503."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import aiohttp
import msgspec
import pytest
from aiohttp import web

from tests.conftest import ServerFactory
from tests.wire import WAIT_S, Http
from tidings_tools.bench.wsclient import HandshakeRefused, LeanWebSocket, SourcePorts, connect


async def receive_json(ws: LeanWebSocket) -> dict[str, object]:
    async with asyncio.timeout(WAIT_S):
        data = await ws.receive()
    assert data is not None
    decoded: dict[str, object] = msgspec.json.decode(data)
    return decoded


async def test_hello_welcome_ping_and_close_with_tidings(server_factory: ServerFactory) -> None:
    server = await server_factory()
    async with aiohttp.ClientSession() as session:
        account = await Http(session, server.http_url).account()
    sources = SourcePorts(["127.0.3.7"])  # a source address of its own
    ws = await connect(server.ws_url, sources)
    ws.send_text(msgspec.json.encode({"type": "hello", "token": account.token}))
    welcome = await receive_json(ws)
    assert welcome["type"] == "welcome"
    assert welcome["user_id"] == account.user_id
    ws.send_text(msgspec.json.encode({"type": "ping", "id": "p1"}))
    assert await receive_json(ws) == {"type": "pong", "id": "p1"}
    await ws.close()
    assert ws.closed
    async with asyncio.timeout(WAIT_S):
        assert await ws.receive() is None


async def test_a_503_is_refused_with_retry_after(server_factory: ServerFactory) -> None:
    server = await server_factory(handshake_rate_per_s=0.001, handshake_burst=1)
    first = await connect(server.ws_url)
    with pytest.raises(HandshakeRefused) as refused:
        await connect(server.ws_url)
    assert refused.value.status == 503
    assert refused.value.retry_after is not None
    assert int(refused.value.retry_after) >= 1
    await first.close()


def raw_frame(first_byte: int, payload: bytes) -> bytes:
    """An unmasked server frame with the given FIN/opcode byte."""
    n = len(payload)
    if n < 126:
        return bytes([first_byte, n]) + payload
    if n < 65536:
        return bytes([first_byte, 126]) + n.to_bytes(2, "big") + payload
    return bytes([first_byte, 127]) + n.to_bytes(8, "big") + payload


@pytest.fixture
async def echo_url() -> AsyncIterator[str]:
    """A plain aiohttp server that answers each text with the same text in three
    fragments, sends a ping first, and closes on "bye"."""

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        await ws.ping(b"are you there")
        async for msg in ws:
            if msg.type is aiohttp.WSMsgType.TEXT:
                if msg.data == "bye":
                    await ws.close(code=1000)
                    break
                data = msg.data.encode()
                third = max(1, len(data) // 3)
                # Raw frames: aiohttp's writer has no API for fragments.
                transport = request.transport
                assert transport is not None
                transport.write(raw_frame(0x01, data[:third]))  # text, not final
                transport.write(raw_frame(0x00, data[third : 2 * third]))  # continuation
                transport.write(raw_frame(0x80, data[2 * third :]))  # final continuation
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"ws://127.0.0.1:{port}/ws"
    finally:
        await runner.cleanup()


async def test_fragments_large_frames_pings_and_server_close(echo_url: str) -> None:
    ws = await connect(echo_url)
    for text in ("short message", "x" * 300, "y" * 70_000):
        ws.send_text(text.encode())
        async with asyncio.timeout(WAIT_S):
            assert await ws.receive() == text.encode()
    ws.send_text(b"bye")
    async with asyncio.timeout(WAIT_S):
        assert await ws.receive() is None
    assert ws.closed


async def test_not_a_websocket_url_is_rejected() -> None:
    with pytest.raises(ValueError, match="ws://host:port"):
        await connect("http://127.0.0.1:1/ws")


def test_source_ports_rotate_over_addresses_then_ports_and_wrap() -> None:
    first = SourcePorts.FIRST_PORT
    sources = SourcePorts(["127.0.9.1", "127.0.9.2"], first)
    assert [sources.take() for _ in range(4)] == [
        ("127.0.9.1", first),
        ("127.0.9.2", first),
        ("127.0.9.1", first + 1),
        ("127.0.9.2", first + 1),
    ]
    for _ in range(2 * SourcePorts.SPAN - 4):
        sources.take()
    assert sources.take() == ("127.0.9.1", first)  # every pair used once before any again


async def test_a_taken_pair_is_skipped(server_factory: ServerFactory) -> None:
    server = await server_factory()
    first = SourcePorts.FIRST_PORT
    sources = SourcePorts(["127.0.9.3"], first)
    taken = socket.socket()
    taken.bind(("127.0.9.3", first))  # the rotation's first pair
    try:
        ws = await connect(server.ws_url, sources)
        assert ws._transport is not None
        sockname = ws._transport.get_extra_info("sockname")
        assert sockname == ("127.0.9.3", first + 1 + SourcePorts.SKIP_PORTS)
        await ws.close()
    finally:
        taken.close()


def test_the_rotation_starts_at_a_random_port() -> None:
    starts = {SourcePorts(["127.0.9.4"]).take()[1] for _ in range(20)}
    assert len(starts) > 1
    assert all(SourcePorts.FIRST_PORT <= port <= SourcePorts.LAST_PORT for port in starts)
