"""The fault proxy does what it says: forwards, cuts mid-stream, stalls, delays."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from tidings_tools.faults.proxy import FaultPlan, FaultProxy

WAIT_S = 5.0


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(4096):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def _proxy(port: int, plan: FaultPlan, seed: int = 1) -> FaultProxy:
    proxy = FaultProxy("127.0.0.1", port, plan, seed=seed)
    await proxy.start()
    return proxy


async def _roundtrip(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    await writer.drain()
    got = b""
    async with asyncio.timeout(WAIT_S):
        while len(got) < len(payload):
            chunk = await reader.read(65536)
            if not chunk:
                break
            got += chunk
    writer.close()
    return got


async def test_forwards_both_ways(echo_port: int) -> None:
    proxy = await _proxy(echo_port, FaultPlan())
    payload = bytes(range(256)) * 100
    assert await _roundtrip(proxy.port, payload) == payload
    await proxy.close()


async def test_cut_tears_the_stream_at_a_seeded_byte(echo_port: int) -> None:
    plan = FaultPlan(cut_probability=1.0, cut_within_bytes=1000)
    proxy = await _proxy(echo_port, plan, seed=7)
    got = await _roundtrip(proxy.port, b"x" * 5000)
    (link,) = proxy.links
    assert link.cut_after is not None
    assert len(got) < 5000  # the peer saw a torn stream, then the end
    assert proxy.cuts == 1
    again = await _proxy(echo_port, plan, seed=7)
    await _roundtrip(again.port, b"y" * 10)
    assert again.links[0].cut_after == link.cut_after  # same seed, same fault
    await proxy.close()
    await again.close()


async def test_stall_keeps_the_socket_open_and_silent(echo_port: int) -> None:
    proxy = await _proxy(echo_port, FaultPlan())
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"ping")
    await writer.drain()
    assert await asyncio.wait_for(reader.readexactly(4), WAIT_S) == b"ping"
    proxy.links[0].stall()
    writer.write(b"lost?")
    await writer.drain()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.read(10), 0.3)
    assert not reader.at_eof()  # no FIN: only a heartbeat can tell
    proxy.links[0].resume()
    assert await asyncio.wait_for(reader.readexactly(5), WAIT_S) == b"lost?"
    writer.close()
    await proxy.close()


async def test_delay_and_throttle_slow_the_link_down(echo_port: int) -> None:
    proxy = await _proxy(echo_port, FaultPlan(delay_s=0.05, throttle_bytes_per_s=100_000))
    started = time.monotonic()
    assert await _roundtrip(proxy.port, b"z" * 10_000) == b"z" * 10_000
    # Lower bounds only: two directions x (50 ms + 10 kB at 100 kB/s).
    assert time.monotonic() - started >= 2 * (0.05 + 0.1) * 0.9
    await proxy.close()
