"""The batch acceptor behind ``tidings serve``: every queued connection is
accepted and served, the listening socket honours ``reuse_port``, and closing
stops accepting."""

from __future__ import annotations

import asyncio

import pytest

from tests.procs import free_port
from tests.wire import WAIT_S
from tidings.http.acceptor import ACCEPT_BATCH, BatchAcceptor, listening_socket

# More than one batch, so that the acceptor must come back for the rest.
CLIENTS = ACCEPT_BATCH * 3 + 7


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
    acceptor = BatchAcceptor(listening_socket("127.0.0.1", 0, reuse_port=False), Echo)
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
