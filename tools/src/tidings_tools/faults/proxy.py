"""A fault-injecting TCP proxy: the bad mobile network, on loopback, on demand.

Put it between clients and a server and it forwards bytes both ways while it
can, on purpose:

- **cut** a link mid-stream (mid-frame: after a random number of bytes, so a
  WebSocket frame is torn in half), as an LTE hand-over does;
- **delay** every chunk by a fixed latency plus random jitter;
- **throttle** a link to a number of bytes per second;
- **stall** a link: stop forwarding in both directions and keep the TCP
  connection open, with no FIN and no RST (a dead radio under a live socket),
  which only heartbeats can detect.

Faults are drawn per link from a seeded ``random.Random``, so a failing chaos
run can be replayed with the same seed. Links can also be broken by hand
(``cut``/``stall``/``resume``) from a test. Traffic goes to one target address
on loopback; every loop is bounded by the links' lifetimes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import dataclass, field

log = logging.getLogger("tidings_tools.faults")

# Bytes read per chunk: small enough that a cut lands mid-frame for most frames.
CHUNK = 4096


@dataclass
class FaultPlan:
    """What the proxy does to new links (probabilities are per link)."""

    cut_probability: float = 0.0
    """Chance that a link is cut after a random number of bytes (1 .. cut_within_bytes)."""
    cut_within_bytes: int = 64 * 1024
    stall_probability: float = 0.0
    """Chance that a link stalls (silently) after a random number of bytes."""
    stall_within_bytes: int = 64 * 1024
    delay_s: float = 0.0
    """Latency added to every chunk, each way."""
    jitter_s: float = 0.0
    """Uniform random extra latency per chunk, in [0, jitter_s]."""
    throttle_bytes_per_s: float | None = None
    """Bandwidth of each direction of each link, or None for unlimited."""


@dataclass
class Link:
    """One client connection through the proxy."""

    number: int
    cut_after: int | None
    stall_after: int | None
    forwarded: int = 0
    stalled: asyncio.Event = field(default_factory=asyncio.Event)
    running: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    closed: bool = False

    def cut(self) -> None:
        """Drop the link now (RST to both sides)."""
        self.closed = True
        for writer in self.writers:
            transport = writer.transport
            if not transport.is_closing():
                transport.abort()
        for task in self.tasks:
            task.cancel()

    def stall(self) -> None:
        """Stop forwarding both ways; both sockets stay open."""
        self.running.clear()
        self.stalled.set()

    def resume(self) -> None:
        self.stalled.clear()
        self.running.set()


class FaultProxy:
    def __init__(
        self,
        target_host: str,
        target_port: int,
        plan: FaultPlan | None = None,
        *,
        seed: int = 0,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
    ) -> None:
        self.target = (target_host, target_port)
        self.plan = plan or FaultPlan()
        self._rng = random.Random(seed)
        self._listen = (listen_host, listen_port)
        self._server: asyncio.Server | None = None
        self.links: list[Link] = []
        self.cuts = 0
        self.stalls = 0

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, *self._listen)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for link in self.links:
            link.cut()
        await asyncio.gather(
            *(t for link in self.links for t in link.tasks), return_exceptions=True
        )

    def cut_all(self) -> None:
        for link in self.links:
            if not link.closed:
                link.cut()
                self.cuts += 1

    def _draw(self, probability: float, within: int) -> int | None:
        if probability > 0 and self._rng.random() < probability:
            return self._rng.randint(1, within)
        return None

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        plan = self.plan
        link = Link(
            number=len(self.links),
            cut_after=self._draw(plan.cut_probability, plan.cut_within_bytes),
            stall_after=self._draw(plan.stall_probability, plan.stall_within_bytes),
        )
        link.running.set()
        self.links.append(link)
        try:
            server_r, server_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.transport.abort()
            link.closed = True
            return
        link.writers = [client_w, server_w]
        jitter_rng = random.Random(self._rng.random())
        link.tasks = [
            asyncio.create_task(self._pump(link, client_r, server_w, jitter_rng)),
            asyncio.create_task(self._pump(link, server_r, client_w, jitter_rng)),
        ]
        await asyncio.gather(*link.tasks, return_exceptions=True)
        link.closed = True
        for writer in link.writers:
            with contextlib.suppress(Exception):
                writer.close()

    async def _pump(
        self,
        link: Link,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        rng: random.Random,
    ) -> None:
        plan = self.plan
        try:
            while not link.closed:
                chunk = await reader.read(CHUNK)
                if not chunk:
                    break
                await link.running.wait()
                if link.cut_after is not None and link.forwarded + len(chunk) >= link.cut_after:
                    keep = max(0, link.cut_after - link.forwarded)
                    writer.write(chunk[:keep])  # a torn frame reaches the other side
                    with contextlib.suppress(Exception):
                        await writer.drain()
                    self.cuts += 1
                    link.cut()
                    return
                if link.stall_after is not None and link.forwarded + len(chunk) >= link.stall_after:
                    link.stall_after = None
                    self.stalls += 1
                    link.stall()
                    await link.running.wait()
                delay = plan.delay_s + (rng.uniform(0, plan.jitter_s) if plan.jitter_s else 0.0)
                if plan.throttle_bytes_per_s:
                    delay += len(chunk) / plan.throttle_bytes_per_s
                if delay > 0:
                    await asyncio.sleep(delay)
                link.forwarded += len(chunk)
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            if not link.closed:
                # One side closed cleanly: pass the FIN on.
                with contextlib.suppress(Exception):
                    writer.write_eof()
