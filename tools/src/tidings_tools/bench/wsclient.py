"""A lean WebSocket client for the restart storm's load generator (text frames only).

Why not aiohttp's client here: in a restart storm the generator shares the
machine's two cores with the servers, and every handshake it makes costs it
about as much CPU as it costs the server (measured: ~750 us per connect +
``hello`` with ``aiohttp.ClientSession.ws_connect``, ~635 us on the server).
The generator's own queueing then shows up as "handshake latency". This client
is an ``asyncio.Protocol`` that writes one fixed upgrade request, parses only
the status line and ``Retry-After`` of the answer, and frames text messages
by hand; it implements what the storm needs of RFC 6455 and no more:

- client frames are masked, as the RFC requires of clients, but with an
  all-zero masking key (so the payload goes out as is). The key exists to
  stop cache poisoning through proxies that do not speak WebSocket; traffic
  here is loopback only, to our own server, which checks the mask bit and
  applies whatever key it is given;
- server frames: text (fragmented or not), close (answered, then the
  connection ends), ping (answered with pong), pong and binary (ignored);
- no extensions (no permessage-deflate), no subprotocols.

It is not for production use; the SDK (:mod:`tidings_client`) uses aiohttp.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import errno
import os
import random
import socket
import struct
from collections.abc import Sequence
from typing import cast
from urllib.parse import urlsplit

# Largest server frame accepted; larger closes the connection.
MAX_FRAME_BYTES = 4 * 1024 * 1024
# Largest upgrade answer (status line and headers).
MAX_HEADER_BYTES = 16 * 1024
# Bound on the closing handshake.
CLOSE_TIMEOUT_S = 2.0

_OP_CONT, _OP_TEXT, _OP_BINARY, _OP_CLOSE, _OP_PING, _OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_FIN = 0x80
_MASKED = 0x80
_ZERO_KEY = b"\x00\x00\x00\x00"
_CLOSE_NORMAL = struct.pack("!H", 1000)


class HandshakeRefused(Exception):
    """The server answered the upgrade with something other than 101."""

    def __init__(self, status: int, retry_after: str | None) -> None:
        super().__init__(f"upgrade answered {status}")
        self.status = status
        self.retry_after = retry_after


def _frame(opcode: int, payload: bytes) -> bytes:
    """One final, masked (zero key) client frame."""
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", _FIN | opcode, _MASKED | n)
    elif n < 65536:
        header = struct.pack("!BBH", _FIN | opcode, _MASKED | 126, n)
    else:
        header = struct.pack("!BBQ", _FIN | opcode, _MASKED | 127, n)
    return header + _ZERO_KEY + payload


class LeanWebSocket(asyncio.Protocol):
    """One connection: ``send_text`` writes at once, ``receive`` awaits the next
    text message (``None`` once the connection is closed)."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._upgraded = False
        self._handshake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._messages: collections.deque[bytes] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._fragments: list[bytes] | None = None
        self._closed = asyncio.Event()

    # -- asyncio.Protocol ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport.
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if not self._handshake.done():
            self._handshake.set_exception(ConnectionResetError("closed during the upgrade"))
        self._closed.set()
        self._wake()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if not self._upgraded and not self._parse_upgrade():
            return
        self._parse_frames()

    # -- the upgrade --------------------------------------------------------------

    def _parse_upgrade(self) -> bool:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > MAX_HEADER_BYTES:
                self._fail_handshake(ValueError("upgrade answer too long"))
            return False
        head = bytes(self._buffer[:end]).decode("latin-1").split("\r\n")
        del self._buffer[: end + 4]
        parts = head[0].split(" ", 2)
        status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        if status != 101:
            retry_after = None
            for line in head[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "retry-after":
                    retry_after = value.strip()
            self._fail_handshake(HandshakeRefused(status, retry_after))
            return False
        self._upgraded = True
        self._handshake.set_result(None)
        return True

    def _fail_handshake(self, exc: Exception) -> None:
        if not self._handshake.done():
            self._handshake.set_exception(exc)
        self.abort()

    # -- frames -------------------------------------------------------------------

    def _parse_frames(self) -> None:
        buf = self._buffer
        while len(buf) >= 2:
            b0, b1 = buf[0], buf[1]
            length = b1 & 0x7F
            offset = 2
            if length == 126:
                if len(buf) < 4:
                    return
                length = struct.unpack_from("!H", buf, 2)[0]
                offset = 4
            elif length == 127:
                if len(buf) < 10:
                    return
                length = struct.unpack_from("!Q", buf, 2)[0]
                offset = 10
            if b1 & _MASKED or length > MAX_FRAME_BYTES:
                self.abort()  # servers never mask; an oversized frame is refused
                return
            if len(buf) < offset + length:
                return
            payload = bytes(buf[offset : offset + length])
            del buf[: offset + length]
            self._on_frame(b0 & _FIN != 0, b0 & 0x0F, payload)

    def _on_frame(self, fin: bool, opcode: int, payload: bytes) -> None:
        if opcode == _OP_TEXT:
            if fin:
                self._deliver(payload)
            else:
                self._fragments = [payload]
        elif opcode == _OP_CONT and self._fragments is not None:
            self._fragments.append(payload)
            if fin:
                self._deliver(b"".join(self._fragments))
                self._fragments = None
        elif opcode == _OP_CLOSE:
            self._write(_frame(_OP_CLOSE, payload[:2]))
            if self._transport is not None:
                self._transport.close()
        elif opcode == _OP_PING:
            self._write(_frame(_OP_PONG, payload))

    def _deliver(self, message: bytes) -> None:
        self._messages.append(message)
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    # -- the caller's side --------------------------------------------------------

    async def upgrade(self, request: bytes) -> None:
        """Send the upgrade request; return once it was answered 101 (the
        ``Sec-WebSocket-Accept`` is not checked: the server is our own)."""
        self._write(request)
        await self._handshake

    @property
    def closed(self) -> bool:
        return self._transport is None or self._transport.is_closing()

    def send_text(self, data: bytes) -> None:
        """Write one text message (raises if the connection is gone)."""
        if self.closed:
            raise ConnectionResetError("not connected")
        assert self._transport is not None
        self._transport.write(_frame(_OP_TEXT, data))

    async def receive(self) -> bytes | None:
        """The next text message; None once the connection has closed."""
        while not self._messages:
            if self._closed.is_set():
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._messages.popleft()

    async def close(self) -> None:
        """Closing handshake (bounded), then the socket goes."""
        if self.closed:
            return
        self._write(_frame(_OP_CLOSE, _CLOSE_NORMAL))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closed.wait(), CLOSE_TIMEOUT_S)
        self.abort()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()


class SourcePorts:
    """Source (address, port) pairs for the generator's connections, in rotation.

    Why not let the kernel choose: it picks a port for a destination by
    searching on from a per-destination offset, so a client that reconnects
    right after its connection closed often gets the very port it just had,
    and a SYN from an (address, port) whose old connection the server side
    still holds (a killed node's orphaned sockets, a TIME_WAIT) is answered
    with a challenge ACK and retried a second later. Real clients each have an
    address of their own; the rotation gives every connection of a run a pair
    not used before in it (``FIRST_PORT`` to ``LAST_PORT``, below the
    kernel's ephemeral range, times the addresses), so that the storm measures
    the server and not the generator's port reuse. (Measured: it did not
    change the storm's SYN retransmissions, which turned out to be the
    server's SYN-ACK retransmits to generators late with their request;
    docs/benchmarks.md.) It starts at `first` (a random port, by default: the
    previous scenario's workers used the same addresses, and their ports stay
    in TIME_WAIT for a minute); :meth:`skip` jumps past a stretch that is
    still taken.
    """

    FIRST_PORT = 10_000
    LAST_PORT = 32_767
    SPAN = LAST_PORT - FIRST_PORT + 1
    # Ports jumped by skip(): wider than what one worker uses in a scenario.
    SKIP_PORTS = 1024

    def __init__(self, addrs: Sequence[str], first: int | None = None) -> None:
        if not addrs:
            raise ValueError("no source addresses")
        self._addrs = tuple(addrs)
        start = random.randrange(self.SPAN) if first is None else first - self.FIRST_PORT
        self._next = start * len(self._addrs)

    def take(self) -> tuple[str, int]:
        """The next pair in the rotation."""
        i = self._next
        self._next += 1
        addr = self._addrs[i % len(self._addrs)]
        return addr, self.FIRST_PORT + (i // len(self._addrs)) % self.SPAN

    def skip(self) -> None:
        """Move on by :data:`SKIP_PORTS` ports (the last pair was taken)."""
        self._next += self.SKIP_PORTS * len(self._addrs)


# Pairs tried by one connect when the next ones are still taken (a previous
# run's TIME_WAIT on this machine, or another process).
BIND_ATTEMPTS = 64


def _bound_socket(sources: SourcePorts | None) -> socket.socket:
    """A non-blocking TCP socket, bound to the next free pair of `sources`."""
    for _ in range(BIND_ATTEMPTS if sources else 1):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            if sources is not None:
                sock.bind(sources.take())
            return sock
        except OSError as exc:
            sock.close()
            if exc.errno != errno.EADDRINUSE or sources is None:
                raise
            sources.skip()
    raise OSError(errno.EADDRINUSE, f"no free source port in {BIND_ATTEMPTS} tries")


async def connect(url: str, sources: SourcePorts | None = None) -> LeanWebSocket:
    """Open ``ws://host:port/path``; raises :class:`HandshakeRefused` on a non-101
    answer, ``OSError`` on a failed connect. The caller bounds the time.

    With `sources`, the socket is bound to the next (address, port) of their
    rotation (see :class:`SourcePorts`); without, the kernel chooses."""
    parts = urlsplit(url)
    if parts.scheme != "ws" or parts.hostname is None or parts.port is None:
        raise ValueError(f"not a ws://host:port URL: {url!r}")
    loop = asyncio.get_running_loop()
    sock = _bound_socket(sources)
    try:
        await loop.sock_connect(sock, (parts.hostname, parts.port))
    except BaseException:
        sock.close()
        raise
    _, ws = await loop.create_connection(LeanWebSocket, sock=sock)
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET {parts.path or '/'} HTTP/1.1\r\n"
        f"Host: {parts.hostname}:{parts.port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    try:
        await ws.upgrade(request.encode())
    except BaseException:
        ws.abort()
        raise
    return ws
