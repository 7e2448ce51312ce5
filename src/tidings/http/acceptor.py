"""The node's listening socket, accepted in batches.

Why not ``TCPSite`` (``loop.create_server``): on uvloop, the server accepts
one connection per event-loop iteration (seen with strace: one ``accept4``
between two ``epoll_pwait``). When a node is busy, an iteration takes 5-20 ms,
so it accepts only 50-200 connections a second however idle its CPU is, and a
reconnect herd after another node died waits seconds in the kernel's accept
queue (measured: ~950 connections queued on one node, drained at ~200/s, while
the node ran at ~20% CPU). This acceptor takes up to :data:`ACCEPT_BATCH`
connections per readiness event and hands each to the loop as an accepted
socket, so the accept rate is bounded by the work per connection, not by the
number of loop iterations. Admission control (503s, in the gateway) then
decides quickly what to do with each.

The socket is created here so that ``SO_REUSEPORT`` can be set when several
nodes share a port (``reuse_port``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import Callable

log = logging.getLogger("tidings.http")

# Connections accepted per readiness event: enough to empty a herd's queue in
# a few iterations, few enough that one iteration stays short.
ACCEPT_BATCH = 256
LISTEN_BACKLOG = 4096
# Out of file descriptors or memory: stop accepting this long (as asyncio does).
RESOURCE_PAUSE_S = 1.0
_RESOURCE_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def listening_socket(host: str, port: int, reuse_port: bool) -> socket.socket:
    """A bound, listening, non-blocking TCP socket for `host`:`port`."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class BatchAcceptor:
    """Accepts connections on `sock` for `protocol_factory` (aiohttp's server)."""

    def __init__(
        self, sock: socket.socket, protocol_factory: Callable[[], asyncio.BaseProtocol]
    ) -> None:
        self._sock = sock
        self._factory = protocol_factory
        self._loop = asyncio.get_running_loop()
        self._pending: set[asyncio.Task[object]] = set()
        self._reading = False

    @property
    def port(self) -> int:
        port: int = self._sock.getsockname()[1]
        return port

    def start(self) -> None:
        self._loop.add_reader(self._sock.fileno(), self._on_readable)
        self._reading = True

    def _on_readable(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = self._sock.accept()
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
            task = self._loop.create_task(self._connect(conn))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _connect(self, conn: socket.socket) -> object:
        try:
            return await self._loop.connect_accepted_socket(self._factory, conn)
        except Exception:
            conn.close()
            return None

    def _pause(self) -> None:
        if self._reading:
            self._loop.remove_reader(self._sock.fileno())
            self._reading = False
            self._loop.call_later(RESOURCE_PAUSE_S, self._resume)

    def _resume(self) -> None:
        if not self._reading and self._sock.fileno() >= 0:
            self.start()

    async def close(self) -> None:
        """Stop accepting and close the listening socket (accepted ones stay)."""
        if self._reading:
            self._loop.remove_reader(self._sock.fileno())
            self._reading = False
        self._sock.close()
        for task in list(self._pending):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._pending, return_exceptions=True)
