"""The batch acceptor behind ``tidings serve``: every queued connection is
accepted and served, the listening socket honours ``reuse_port``, a node with
no room steps off a shared port and comes back, and closing stops accepting."""

from __future__ import annotations

import asyncio

import pytest

from tests.procs import free_port
from tests.wire import WAIT_S, poll
from tidings.http.acceptor import ACCEPT_BATCH, BatchAcceptor, listening_socket

# More than one batch, so that the acceptor must come back for the rest.
CLIENTS = ACCEPT_BATCH * 3 + 7
# Connections per round on a shared port: all on one of two listeners by
# chance has probability 2 * 2**-40.
ROUND = 40
REJOIN_AT = 10


class Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


async def echo_once(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        return await reader.readexactly(len(payload))
    finally:
        writer.close()


async def test_a_herd_larger_than_a_batch_is_accepted_and_served() -> None:
    acceptor = BatchAcceptor("127.0.0.1", 0, Echo)
    port = acceptor.port
    acceptor.start()
    try:
        async with asyncio.timeout(WAIT_S * 2):
            answers = await asyncio.gather(
                *(echo_once(port, f"client {i}".encode()) for i in range(CLIENTS))
            )
        assert answers == [f"client {i}".encode() for i in range(CLIENTS)]
    finally:
        await acceptor.close()
    with pytest.raises(ConnectionRefusedError):
        await echo_once(port, b"after close")


def test_reuse_port_lets_two_sockets_share_a_port() -> None:
    port = free_port()
    first = listening_socket("127.0.0.1", port, reuse_port=True)
    second = listening_socket("127.0.0.1", port, reuse_port=True)
    first.close()
    second.close()
    plain = listening_socket("127.0.0.1", port, reuse_port=False)
    try:
        with pytest.raises(OSError, match="in use"):
            listening_socket("127.0.0.1", port, reuse_port=False)
    finally:
        plain.close()


class Tag(asyncio.Protocol):
    """Answers with the name of the listener that accepted the connection."""

    def __init__(self, name: bytes) -> None:
        self.name = name

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(self.name)
        transport.close()


async def tags(port: int) -> set[bytes]:
    """Which listeners a round of connections to `port` reached."""

    async def one() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(b"GET / HTTP/1.1\r\n\r\n")  # accepted once it speaks
            return await reader.readexactly(1)
        finally:
            writer.close()

    async with asyncio.timeout(WAIT_S):
        return set(await asyncio.gather(*(one() for _ in range(ROUND))))


async def test_a_node_with_no_room_steps_off_a_shared_port_and_comes_back() -> None:
    port = free_port()
    room = 100
    full = BatchAcceptor(
        "127.0.0.1",
        port,
        lambda: Tag(b"F"),
        reuse_port=True,
        room=lambda: room,
        rejoin_at=REJOIN_AT,
    )
    other = BatchAcceptor("127.0.0.1", port, lambda: Tag(b"O"), reuse_port=True)
    full.start()
    other.start()
    try:
        assert await tags(port) == {b"F", b"O"}
        room = 0
        full.refresh()  # at once, not at the next poll (as when a drain starts)
        assert not full.listening
        assert await tags(port) == {b"O"}
        room = REJOIN_AT - 1  # some room, but not enough to come back for
        await asyncio.sleep(0.3)
        assert not full.listening
        room = REJOIN_AT
        await poll(lambda: full.listening, WAIT_S)
        assert full.port == port
        assert await tags(port) == {b"F", b"O"}
    finally:
        await full.close()
        await other.close()
    assert not full.listening


async def test_connections_queued_when_a_node_steps_off_are_answered_not_reset() -> None:
    room = 100
    acceptor = BatchAcceptor("127.0.0.1", 0, lambda: Tag(b"F"), room=lambda: room)
    port = acceptor.port
    # Not started: connections queue in the kernel, as under a herd.
    try:
        pending = [asyncio.open_connection("127.0.0.1", port) for _ in range(ROUND)]
        async with asyncio.timeout(WAIT_S):
            streams = await asyncio.gather(*pending)
            for _, writer in streams:
                # A client speaks first; until then the kernel holds the
                # connection back from accept (TCP_DEFER_ACCEPT).
                writer.write(b"GET / HTTP/1.1\r\n\r\n")
                await writer.drain()
        room = 0
        acceptor.start()
        await poll(lambda: not acceptor.listening, WAIT_S)
        async with asyncio.timeout(WAIT_S):
            answers = [await reader.readexactly(1) for reader, _ in streams]
        assert answers == [b"F"] * ROUND
        for _, writer in streams:
            writer.close()
    finally:
        await acceptor.close()


REFUSED = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


def refuse_upgrades(head: bytes) -> bytes | None:
    return REFUSED if head.startswith(b"GET /refused ") else None


async def exchange(port: int, request: bytes) -> bytes:
    """Send `request`; read until EOF or the request's length (bounded)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        async with asyncio.timeout(WAIT_S):
            writer.write(request)
            answer = b""
            while len(answer) < len(request) and (chunk := await reader.read(4096)):
                answer += chunk
            return answer
    finally:
        writer.close()


async def test_the_screen_answers_on_the_bare_socket_and_passes_the_rest_on() -> None:
    acceptor = BatchAcceptor("127.0.0.1", 0, Echo, screen=refuse_upgrades)
    acceptor.start()
    try:
        refused = b"GET /refused HTTP/1.1\r\nHost: x\r\n\r\n"
        # Answered and closed (EOF after the answer: the head was read off, so
        # the close is a FIN, not a reset that could drop the answer).
        assert await exchange(acceptor.port, refused) == REFUSED
        # Anything else reaches the protocol with its bytes intact.
        other = b"GET /other HTTP/1.1\r\n\r\n"
        assert await exchange(acceptor.port, other) == other
        # So does a head that has not fully arrived: the screen sees whole heads only.
        partial = b"GET /refused HTTP/1.1\r\nHost:"
        assert await exchange(acceptor.port, partial) == partial
    finally:
        await acceptor.close()
