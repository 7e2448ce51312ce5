"""A small round-robin TCP load balancer on loopback, for tests and a local dev cluster.

Why it exists: a Tidings cluster is several stateless nodes behind a load
balancer, and the behaviours that matter (a node dies and its clients come
back *elsewhere*; a draining node's clients spread their reconnects over the
other nodes) only show when clients reach the nodes through one address.
Production uses nginx or a cloud balancer (docs/operations.md); the tests and
``tidings serve`` developers need the same shape without installing anything,
so this is the smallest balancer that behaves like one at layer 4:

- each new client connection goes to the next target in round-robin order;
- a target that refuses (or does not answer within ``connect_timeout``) is
  skipped and the next one tried, at most once each per connection, so a
  killed node costs its clients one refused connect, not an outage;
- bytes are forwarded both ways until either side closes; a FIN is passed on
  (half-close), a reset or error tears down both sides, as a real balancer
  does when a backend dies.

It has no health checks, no stickiness and no TLS: WebSocket sessions are
long-lived TCP connections, so per-connection round robin is what matters.

Run it in front of a local 3-node cluster::

    python -m tidings_tools.faults.balancer --listen 8080 \\
        --to 127.0.0.1:8081,127.0.0.1:8082,127.0.0.1:8083
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

log = logging.getLogger("tidings_tools.faults.balancer")

# Bytes read per chunk: a WebSocket frame of a chat message fits many times.
CHUNK = 64 * 1024
# A backend on loopback accepts within a millisecond; one that takes a second
# is down or overloaded, and the client is better served by the next one.
DEFAULT_CONNECT_TIMEOUT_S = 1.0


@dataclass(eq=False)  # identity semantics: links live in a set
class _Link:
    """One client connection and its backend connection."""

    target: int
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    closed: bool = False

    def abort(self) -> None:
        """Tear down both sides now (RST)."""
        self.closed = True
        for writer in self.writers:
            if not writer.transport.is_closing():
                writer.transport.abort()
        for task in self.tasks:
            task.cancel()


class Balancer:
    """Round-robin TCP forwarding from ``listen_host:listen_port`` to ``targets``.

    ``routed[i]`` counts connections sent to ``targets[i]``; ``refused``
    counts connect attempts to targets that failed (and were skipped);
    ``dropped`` counts client connections for which no target accepted.
    """

    def __init__(
        self,
        targets: Sequence[tuple[str, int]],
        listen_port: int = 0,
        *,
        listen_host: str = "127.0.0.1",
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_S,
    ) -> None:
        if not targets:
            raise ValueError("a balancer needs at least one target")
        self.targets: list[tuple[str, int]] = list(targets)
        self._listen = (listen_host, listen_port)
        self._connect_timeout = connect_timeout
        self._server: asyncio.Server | None = None
        self._next = 0
        self._links: set[_Link] = set()
        self._accepts: set[asyncio.Task[None]] = set()
        self.routed: list[int] = [0] * len(self.targets)
        self.refused = 0
        self.dropped = 0

    @property
    def port(self) -> int:
        """The port it listens on (useful with ``listen_port=0``)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("the balancer is not started")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def live_links(self) -> int:
        return sum(1 for link in self._links if not link.closed)

    async def start(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(
                self._accept, *self._listen, backlog=4096, reuse_address=True
            )

    async def close(self) -> None:
        """Stop listening and tear down every forwarded connection."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for link in list(self._links):
            link.abort()  # cancels its pumps; its accept task then returns
        # Accept tasks are awaited, not cancelled (asyncio's stream callback
        # logs a cancelled client_connected_cb as an error); each one ends
        # within the connect timeout once its link is aborted.
        accepts = list(self._accepts)
        if accepts:
            await asyncio.wait(accepts, timeout=self._connect_timeout + 1)
        self._links.clear()
        if server is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self._connect_timeout + 1):
                    await server.wait_closed()

    async def __aenter__(self) -> Balancer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _open_backend(
        self,
    ) -> tuple[int, asyncio.StreamReader, asyncio.StreamWriter] | None:
        """Connect to the next target that accepts, trying each at most once."""
        start = self._next
        self._next = (self._next + 1) % len(self.targets)
        for offset in range(len(self.targets)):
            index = (start + offset) % len(self.targets)
            host, port = self.targets[index]
            try:
                async with asyncio.timeout(self._connect_timeout):
                    reader, writer = await asyncio.open_connection(host, port)
            except (OSError, TimeoutError):
                self.refused += 1
                continue
            self.routed[index] += 1
            return index, reader, writer
        return None

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._accepts.add(task)
        try:
            backend = await self._open_backend()
            if backend is None:
                self.dropped += 1
                client_w.transport.abort()
                return
            index, server_r, server_w = backend
            if self._server is None:  # closed while connecting
                server_w.transport.abort()
                client_w.transport.abort()
                return
            link = _Link(index, [client_w, server_w])
            self._links.add(link)
            link.tasks = [
                asyncio.create_task(self._pump(link, client_r, server_w)),
                asyncio.create_task(self._pump(link, server_r, client_w)),
            ]
            try:
                await asyncio.gather(*link.tasks, return_exceptions=True)
            finally:
                link.closed = True
                for writer in link.writers:
                    with contextlib.suppress(Exception):
                        writer.close()
                self._links.discard(link)
        finally:
            if task is not None:
                self._accepts.discard(task)

    @staticmethod
    async def _pump(
        link: _Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Copy one direction until EOF (passed on as a FIN) or an error (both sides reset)."""
        try:
            while not link.closed:
                chunk = await reader.read(CHUNK)
                if not chunk:
                    if writer.can_write_eof() and not writer.transport.is_closing():
                        writer.write_eof()
                    return
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, OSError):
            link.abort()


def _parse_target(text: str) -> tuple[str, int]:
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def _parse_targets(text: str) -> list[tuple[str, int]]:
    targets = [_parse_target(part) for part in text.split(",") if part.strip()]
    if not targets:
        raise argparse.ArgumentTypeError("at least one HOST:PORT is needed")
    return targets


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tidings_tools.faults.balancer",
        description="Round-robin TCP load balancer for a local Tidings cluster.",
    )
    parser.add_argument("--listen", type=int, required=True, help="port to listen on")
    parser.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    parser.add_argument(
        "--to",
        type=_parse_targets,
        required=True,
        help="comma-separated HOST:PORT targets, e.g. 127.0.0.1:8081,127.0.0.1:8082",
    )
    return parser


async def _serve(args: argparse.Namespace) -> int:
    balancer = Balancer(args.to, args.listen, listen_host=args.host)
    await balancer.start()
    targets = ", ".join(f"{h}:{p}" for h, p in balancer.targets)
    print(f"balancing {args.host}:{balancer.port} -> {targets}", file=sys.stderr)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await balancer.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return asyncio.run(_serve(args))


if __name__ == "__main__":
    sys.exit(main())
