"""An answered socket is closed after its client closes (so the client, not
the server, keeps the TIME_WAIT), or after a bound, and never more than a
bounded number wait at once."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from tests.wire import WAIT_S, poll
from tidings.http.linger import LingeringCloser

SHORT_LINGER_S = 0.2
TIME_WAIT = "06"  # the state column of /proc/net/tcp


def time_wait_local_ports(port: int) -> set[int]:
    """Local ports of the TIME_WAIT entries whose local or remote port is `port`."""
    found = set()
    with open("/proc/net/tcp") as table:
        for line in list(table)[1:]:
            fields = line.split()
            local, remote, state = fields[1], fields[2], fields[3]
            local_port, remote_port = int(local.split(":")[1], 16), int(remote.split(":")[1], 16)
            if state == TIME_WAIT and port in (local_port, remote_port):
                found.add(local_port)
    return found


@pytest.fixture
async def listener() -> AsyncIterator[socket.socket]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield sock
    finally:
        sock.close()


async def answered_pair(listener: socket.socket) -> tuple[socket.socket, socket.socket]:
    """(client, server side) of one connection; the server has answered."""
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    server.setblocking(False)
    server.send(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
    return client, server


async def test_the_client_closes_first_and_keeps_the_time_wait(listener: socket.socket) -> None:
    closer = LingeringCloser(asyncio.get_running_loop())
    client, server = await answered_pair(listener)
    closer.close_after_peer(server)
    await asyncio.sleep(0.05)
    assert len(closer) == 1  # still waiting: the client has not closed
    assert client.recv(100).startswith(b"HTTP/1.1 503")
    client_port = client.getsockname()[1]
    client.close()
    await poll(lambda: len(closer) == 0, WAIT_S)
    await poll(lambda: client_port in time_wait_local_ports(client_port), WAIT_S)
    assert listener.getsockname()[1] not in time_wait_local_ports(client_port)


async def test_a_client_that_never_closes_is_cut_after_the_bound(listener: socket.socket) -> None:
    closer = LingeringCloser(asyncio.get_running_loop(), linger_s=SHORT_LINGER_S)
    client, server = await answered_pair(listener)
    closer.close_after_peer(server)
    await poll(lambda: len(closer) == 0, WAIT_S)
    client.settimeout(WAIT_S)
    assert client.recv(100).startswith(b"HTTP/1.1 503")
    assert client.recv(100) == b""  # EOF: the server closed
    client.close()


async def test_beyond_the_limit_answered_sockets_close_at_once(listener: socket.socket) -> None:
    closer = LingeringCloser(asyncio.get_running_loop(), max_sockets=1)
    first_client, first = await answered_pair(listener)
    second_client, second = await answered_pair(listener)
    closer.close_after_peer(first)
    closer.close_after_peer(second)
    assert len(closer) == 1
    assert second.fileno() == -1  # closed
    closer.close_all()
    assert len(closer) == 0
    assert first.fileno() == -1
    first_client.close()
    second_client.close()
