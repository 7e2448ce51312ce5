"""FM3: a consumer that stops reading is cut, and costs the server bounded memory.

The stalled client is a plain socket with a tiny receive buffer that, after
its welcome, never reads again (a dead app on a live link). The sender and a
healthy member must not notice anything.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct

import aiohttp
import msgspec

from tests.conftest import RunningServer, ServerFactory
from tests.wire import WAIT_S, Http, Raw

SEND_BUFFER = 256 * 1024
PAYLOAD = "x" * 30_000
MESSAGES = 400  # 12 MB: far beyond the buffer limit plus the kernel's socket buffers


def _masked_text_frame(payload: bytes) -> bytes:
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    n = len(payload)
    header = bytes((0x81, 0x80 | n)) if n < 126 else struct.pack("!BBH", 0x81, 0xFE, n)
    return header + mask + body


async def _stalled_client(port: int, token: str) -> socket.socket:
    """Handshake and hello on a raw socket, then never read again."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(WAIT_S)
    await asyncio.to_thread(sock.connect, ("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    sock.sendall(request.encode())
    response = b""
    while b"\r\n\r\n" not in response:
        response += await asyncio.to_thread(sock.recv, 1)
    assert response.startswith(b"HTTP/1.1 101"), response
    sock.sendall(_masked_text_frame(msgspec.json.encode({"type": "hello", "token": token})))
    return sock


async def test_stalled_consumer_is_cut_and_others_unaffected(server_factory: ServerFactory) -> None:
    server: RunningServer = await server_factory(send_buffer_bytes=SEND_BUFFER)
    async with aiohttp.ClientSession() as session:
        http = Http(session, server.http_url)
        sender_acc, healthy_acc, stalled_acc = [await http.account() for _ in range(3)]
        cid = await http.conversation(sender_acc, "group", [healthy_acc, stalled_acc])
        sender, _ = await Raw.connect(session, server.ws_url, sender_acc.token)
        healthy, _ = await Raw.connect(session, server.ws_url, healthy_acc.token)
        stalled = await _stalled_client(server.port, stalled_acc.token)

        async def receive_all() -> list[int]:
            return [(await healthy.recv_type("msg"))["seq"] for _ in range(MESSAGES)]

        receiving = asyncio.create_task(receive_all())
        for n in range(MESSAGES):
            await sender.send(
                {
                    "type": "send",
                    "conversation_id": cid,
                    "client_msg_id": f"big{n}",
                    "content": {"text": PAYLOAD},
                }
            )
            assert (await sender.recv_type("ack"))["seq"] == n + 1
        assert await asyncio.wait_for(receiving, WAIT_S * 3) == list(range(1, MESSAGES + 1))

        metrics = server.node.metrics
        assert metrics.registry.get_sample_value("tidings_slow_consumer_disconnects_total") == 1
        # The stalled connection is gone from the node: reading now ends in EOF
        # after at most what the server had buffered before cutting it.
        received = 0
        async with asyncio.timeout(WAIT_S):
            while True:
                chunk = await asyncio.to_thread(stalled.recv, 65536)
                if not chunk:
                    break
                received += len(chunk)
        assert received < MESSAGES * len(PAYLOAD) // 2
        stalled.close()
        await sender.close()
        await healthy.close()
