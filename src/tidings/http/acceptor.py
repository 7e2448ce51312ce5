"""The node's listening socket, accepted in batches.

Why not ``TCPSite`` (``loop.create_server``): on uvloop, the server accepts
one connection per event-loop iteration (one ``accept4`` between two
``epoll_pwait``). A busy node's iterations are slow, so its accept rate is
bound by the loop's iteration rate however idle its CPU is, and a reconnect
herd after another node died waits seconds in the kernel's accept queue
(docs/benchmarks.md, "Restart storms", "Accepting was the bottleneck" has the
figures). This acceptor takes up to :data:`ACCEPT_BATCH`
connections per readiness event and hands each to the loop as an accepted
socket, so the accept rate is bounded by the work per connection, not by the
number of loop iterations. Admission control (503s, in the gateway) then
decides quickly what to do with each.

The socket is created here so that ``SO_REUSEPORT`` can be set when several
nodes share a port (``reuse_port``), and so that a node can *step off* the
shared port while it has no room (``room``): it is full, or draining. The
kernel spreads new connections over the sockets listening on a port at
random, so a full node that keeps listening is picked as often as one with
room, and each client it answers 503 spends a whole backoff interval on it.
With 50,000 clients on 3 nodes, after one node was killed the two survivors
filled up at their open-file limit and most retries landed on them, so the
last clients stayed out long after the restarted node had room
(docs/benchmarks.md, "Restart storms", the 50,000-client table, and "What
changed, and what each step measured (50,000 clients, kill)" in "Scale
targets, re-measured 2026-12-01 22:35-23:20 UTC"). A node that stops
listening leaves the group, and every
retry reaches a node with room. It listens again once its room is at least
``rejoin_at`` (the gateway's hysteresis). Connections already queued on the
socket are accepted (and refused by admission) before it closes; the few
that reach it in between are reset by the kernel unless
``net.ipv4.tcp_migrate_req`` is 1, which hands them to another listener.

With ``screen``, the acceptor peeks at each new connection's request head
(``MSG_PEEK``: the bytes stay for aiohttp) and asks it whether to answer at
once. The gateway answers refused upgrades this way: a 503 from aiohttp's
machinery costs the node several times the CPU of one written straight on
the socket (a protocol object, a parser, a handler task and a response, where
the screen only peeks, reads and sends; ``TCP_DEFER_ACCEPT`` makes sure the
head is there to see), and in a reconnect herd most upgrades are refused
(docs/benchmarks.md, "Figures behind design choices (from code comments)",
"Refused upgrades answered at accept"). Only a complete head is screened (the
request is then read off before the answer, so that closing sends FIN, not
RST), and the answered socket is closed once the client has closed its side
(http/linger.py: a server that closes first keeps TIME_WAIT entries that
turn a client's next SYN from the same port into a one-second retry).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import Callable

from tidings.http.linger import LingeringCloser

log = logging.getLogger("tidings.http")

# Connections accepted per readiness event: enough to empty a herd's queue in
# a few iterations, few enough that one iteration stays short.
ACCEPT_BATCH = 256
LISTEN_BACKLOG = 4096
# Out of file descriptors or memory: stop accepting this long (as asyncio does).
RESOURCE_PAUSE_S = 1.0
_RESOURCE_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# TCP_DEFER_ACCEPT: the kernel hands over a connection once its first bytes
# (the request) have arrived, or after this many seconds. Without it a node
# that is not busy accepts before the request is there, so the screen cannot
# see it and the refusal takes aiohttp's far costlier path (docs/benchmarks.md,
# "Figures behind design choices (from code comments)"); and a client that
# connects and sends nothing costs no descriptor or handshake slot until then.
DEFER_ACCEPT_S = 1
# Bytes peeked at for screen(): a WebSocket upgrade's head is 200-500 bytes.
HEAD_PEEK_BYTES = 2048
# How often the acceptor looks at its node's room: a node steps off the port
# within this long of filling up, and back on within this long of having room.
ROOM_POLL_S = 0.1


def listening_socket(host: str, port: int, reuse_port: bool) -> socket.socket:
    """A bound, listening, non-blocking TCP socket for `host`:`port`."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if hasattr(socket, "TCP_DEFER_ACCEPT"):  # Linux
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, DEFER_ACCEPT_S)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class BatchAcceptor:
    """Accepts connections on `host`:`port` for `protocol_factory` (aiohttp's
    server); with `room`, steps off the port while that is 0 and comes back
    when it reaches `rejoin_at` (see the module docstring: for nodes sharing
    the port with ``reuse_port``)."""

    def __init__(
        self,
        host: str,
        port: int,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        *,
        reuse_port: bool = False,
        room: Callable[[], int] | None = None,
        rejoin_at: int = 1,
        screen: Callable[[bytes], bytes | None] | None = None,
    ) -> None:
        self._host = host
        self._reuse_port = reuse_port
        self._factory = protocol_factory
        self._room = room
        self._rejoin_at = max(1, rejoin_at)
        self._screen = screen
        self._loop = asyncio.get_running_loop()
        self._closer = LingeringCloser(self._loop)
        self._sock: socket.socket | None = listening_socket(host, port, reuse_port)
        # Port 0 binds an ephemeral port: listening again must take the same one.
        self._port: int = self._sock.getsockname()[1]
        self._pending: set[asyncio.Task[object]] = set()
        self._reading = False
        self._closed = False
        self._watch: asyncio.TimerHandle | None = None

    @property
    def port(self) -> int:
        return self._port

    @property
    def listening(self) -> bool:
        """False while the node is off the port (or closed)."""
        return self._sock is not None

    def start(self) -> None:
        """Accept from now on; with `room`, step off the port at once if it is 0."""
        self._start_reading()
        if self._room is not None and self._watch is None:
            self._check_room()

    def _start_reading(self) -> None:
        if self._sock is not None and not self._reading and not self._closed:
            self._loop.add_reader(self._sock.fileno(), self._on_readable)
            self._reading = True

    def _on_readable(self) -> None:
        if self._sock is not None:
            self._accept(self._sock, ACCEPT_BATCH)

    def _accept(self, sock: socket.socket, limit: int) -> None:
        for _ in range(limit):
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _RESOURCE_ERRORS:
                    log.warning("accept paused", extra={"error": str(exc)})
                    self._pause()
                else:
                    log.warning("accept failed", extra={"error": str(exc)})
                return
            conn.setblocking(False)
            if self._screen is not None and self._answered(conn, self._screen):
                continue
            task = self._loop.create_task(self._connect(conn))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    def _answered(self, conn: socket.socket, screen: Callable[[bytes], bytes | None]) -> bool:
        """True if `screen` answered the connection's request head (the socket
        is then closed once the client has closed its side: http/linger.py)."""
        try:
            head = conn.recv(HEAD_PEEK_BYTES, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return False  # nothing sent yet: aiohttp waits for it
        except OSError:
            conn.close()
            return True
        end = head.find(b"\r\n\r\n")
        if end < 0:
            return False
        answer = screen(head)
        if answer is None:
            return False
        try:
            conn.recv(end + 4)  # the head was peeked: this does not block
            conn.send(answer)  # a few hundred bytes into an empty buffer
        except OSError:
            conn.close()  # the client is gone: nothing to answer
            return True
        self._closer.close_after_peer(conn)
        return True

    async def _connect(self, conn: socket.socket) -> object:
        try:
            return await self._loop.connect_accepted_socket(self._factory, conn)
        except Exception:
            conn.close()
            return None

    def _stop_reading(self) -> None:
        if self._reading and self._sock is not None:
            self._loop.remove_reader(self._sock.fileno())
        self._reading = False

    def _pause(self) -> None:
        if self._reading:
            self._stop_reading()
            self._loop.call_later(RESOURCE_PAUSE_S, self._resume)

    def _resume(self) -> None:
        self._start_reading()

    def refresh(self) -> None:
        """Look at the room now rather than at the next poll (the node has just
        started draining: it steps off before its clients are told to leave)."""
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
            self._check_room()

    def _check_room(self) -> None:
        """Step off the port when there is no room, back on when there is."""
        self._watch = None
        if self._closed or self._room is None:
            return
        room = self._room()
        if self._sock is not None and room <= 0:
            self._leave()
        elif self._sock is None and room >= self._rejoin_at:
            self._rejoin()
        self._watch = self._loop.call_later(ROOM_POLL_S, self._check_room)

    def _leave(self) -> None:
        sock = self._sock
        assert sock is not None
        self._stop_reading()
        # What is queued already gets an answer (a 503) instead of a reset.
        self._accept(sock, LISTEN_BACKLOG)
        sock.close()
        self._sock = None
        log.info("left the port: no room", extra={"port": self._port})

    def _rejoin(self) -> None:
        try:
            self._sock = listening_socket(self._host, self._port, self._reuse_port)
        except OSError as exc:
            log.warning("could not listen again", extra={"error": str(exc)})
            return
        log.info("listening again", extra={"port": self._port})
        self._start_reading()

    async def close(self) -> None:
        """Stop accepting and close the listening socket (accepted ones stay)."""
        self._closed = True
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        self._stop_reading()
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._closer.close_all()
        for task in list(self._pending):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._pending, return_exceptions=True)
