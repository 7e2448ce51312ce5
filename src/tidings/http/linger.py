"""Closing a connection we answered only after the client has closed its side.

Why: the side of a TCP connection that closes first keeps it in TIME_WAIT for
a minute. When the server closes first, at the rate of the 503s the acceptor
writes during a reconnect herd (http/acceptor.py: thousands a second), it
holds a TIME_WAIT entry for every refused (client address, port); a client
that reuses that port within the minute (a busy client host, or many users
behind one carrier NAT) can then have its SYN answered with a challenge ACK
instead of a SYN-ACK, and connects only after its SYN retransmission a second
later. aiohttp's own 503s leave the close to the client (keep-alive); this
does the same for the ones the acceptor writes: an answered socket waits,
bounded in time and number, for the client's FIN and only then closes, so the
client keeps the TIME_WAIT and, with it, the knowledge not to reuse the port
too soon.

It is kept for the clients behind one address that it protects, not for
the benchmarks: it did not change the restart storm's figures, whose SYN
retransmissions have another cause, SYN-ACKs the server retransmits when a
client has not sent its request within a second (``TCP_DEFER_ACCEPT`` waits
for it), i.e. load generators too busy to write (docs/benchmarks.md, "What
bounds the 50,000-client handshake p99").
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time

# How long an answered socket waits for the client to close: a client reads
# a 503 and closes within milliseconds; one that does not is cut after this.
LINGER_S = 2.0
# Sockets waiting at once, at most: beyond this (a flood of clients that
# never close) answered sockets are closed at once, TIME_WAIT and all,
# rather than holding file descriptors the node needs for sessions.
MAX_LINGERING = 1024
# Bytes read per readiness event while waiting (a client may send more
# before it closes; they are discarded).
DRAIN_BYTES = 4096


class LingeringCloser:
    """Closes answered sockets once their client closes (or after :data:`LINGER_S`)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        linger_s: float = LINGER_S,
        max_sockets: int = MAX_LINGERING,
    ) -> None:
        self._loop = loop
        self._linger_s = linger_s
        self._max_sockets = max_sockets
        # fd -> (socket, deadline); dicts keep insertion order, so the oldest
        # (the first to expire) come first.
        self._waiting: dict[int, tuple[socket.socket, float]] = {}
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._waiting)

    def close_after_peer(self, sock: socket.socket) -> None:
        """Close `sock` (non-blocking, answered) once its client has closed."""
        if len(self._waiting) >= self._max_sockets:
            sock.close()
            return
        fd = sock.fileno()
        self._waiting[fd] = (sock, time.monotonic() + self._linger_s)
        self._loop.add_reader(fd, self._readable, fd)
        if self._timer is None:
            self._timer = self._loop.call_later(self._linger_s, self._expire)

    def _readable(self, fd: int) -> None:
        entry = self._waiting.get(fd)
        if entry is None:
            return
        try:
            if entry[0].recv(DRAIN_BYTES):
                return  # more bytes: keep waiting for the FIN
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pass  # reset by the client: nothing left to wait for
        self._release(fd)

    def _release(self, fd: int) -> None:
        sock, _ = self._waiting.pop(fd)
        self._loop.remove_reader(fd)
        sock.close()

    def _expire(self) -> None:
        self._timer = None
        now = time.monotonic()
        for fd, (_, deadline) in list(self._waiting.items()):
            if deadline > now:
                break
            self._release(fd)
        if self._waiting:
            _, deadline = next(iter(self._waiting.values()))
            self._timer = self._loop.call_later(max(0.0, deadline - now), self._expire)

    def close_all(self) -> None:
        """Close every waiting socket now (the node is stopping)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for fd in list(self._waiting):
            with contextlib.suppress(OSError):
                self._release(fd)
