"""The Redis bus: nodes of a cluster exchange events through Redis pub/sub.

Layout: one Redis channel per bus topic (``{prefix}conv:{id}``,
``{prefix}user:{id}``). A node subscribes a topic once however many of its
users need it (the gateway reference-counts), so a message to a 1000-member
group spread over three nodes is one PUBLISH that Redis copies to three
sockets. The alternatives (one channel per node with a routing table in
Redis, sharded channels, one channel per user) were measured and lost; the
figures are in docs/architecture.md (AT5).

Each node holds two connections to Redis:

- a pub/sub connection, owned by one reader task that calls the handler for
  every message in arrival order, answers for SUBSCRIBE/UNSUBSCRIBE
  confirmations, sends heartbeats and reconnects with bounded, jittered
  backoff, re-subscribing every topic the node still wants;
- a publishing client fed by one writer task that pipelines every PUBLISH
  queued meanwhile in call order, so the order per publisher is the call
  order and a burst costs one round trip instead of one each.

Redis pub/sub is at-most-once: what is published while a node is cut off is
lost for that node. The bus therefore tells the node, through
``on_reconnect``, that a gap may have happened, and the node repairs its
connections from the store (the store is the source of truth). While Redis is
unreachable ``publish`` fails fast with ``UNAVAILABLE`` and
``subscribe``/``unsubscribe`` only update the wanted set, applied on
reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.backoff import NoBackoff
from redis.exceptions import ResponseError
from redis.retry import Retry

from tidings.core.errors import ErrorCode, TidingsError
from tidings.core.ports.bus import GapHandler, Handler

log = logging.getLogger("tidings.bus.redis")

# Opening a TCP connection and the handshake to a healthy Redis on the same
# network takes a millisecond; a second means it is down or unreachable, and
# waiting longer only delays the node's reaction (readiness, fail-fast).
CONNECT_TIMEOUT_S = 1.0
# A PUBLISH is a fast-path optimisation (the store already holds the event):
# rather than stall the sender, give up after this and let sync repair. Far
# below the seeds' 2-second delivery budget, far above a healthy round trip.
PUBLISH_TIMEOUT_S = 1.0
# How long ``subscribe``/``unsubscribe`` wait for Redis to confirm. Longer
# means the connection is sick; the heartbeat will then replace it and the
# wanted set is re-applied, so the caller need not fail.
CONFIRM_TIMEOUT_S = 2.0
# ``ping`` (readiness probe) budget: a probe must answer before the load
# balancer's own probe timeout (typically 1-5 s).
PING_TIMEOUT_S = 1.0
# After this much silence on the pub/sub connection the reader sends PING; if
# another interval passes without any byte, the connection is declared dead.
# Catches half-open TCP (a partition without RST) within ~2 intervals.
HEARTBEAT_INTERVAL_S = 5.0
# Reconnect backoff: first retry after ~0.05 s (a Redis restart or failover
# is often that quick), doubling up to 2 s so a long outage costs one attempt
# per 2 s per node; jittered so that a cluster does not reconnect in step.
BACKOFF_INITIAL_S = 0.05
BACKOFF_MAX_S = 2.0
# PUBLISHes sent in one pipeline at most: large enough to amortise the round
# trip under bursts, small enough that one batch does not hog the loop.
MAX_PUBLISH_BATCH = 512
# Channels per SUBSCRIBE command when re-subscribing after a reconnect (a node
# may want tens of thousands of topics; keep each command a bounded size).
RESUBSCRIBE_CHUNK = 1000

DEFAULT_PREFIX = "tidings:"


def _unavailable(message: str) -> TidingsError:
    return TidingsError(ErrorCode.UNAVAILABLE, message, retry_after_ms=1000)


def backoff_delay(attempt: int) -> float:
    """Delay before reconnect ``attempt`` (0-based): exponential, capped,
    'equal jitter' (half fixed so it never collapses to zero, half random)."""
    ceiling = min(BACKOFF_MAX_S, BACKOFF_INITIAL_S * 2.0 ** min(attempt, 16))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


@dataclass
class _Pending:
    """A reply the pub/sub connection owes us, in the order commands were sent."""

    kind: bytes  # b"subscribe", b"unsubscribe" or b"pong"
    channel: bytes
    waiter: asyncio.Future[bool] | None


class _ConnectionLost(Exception):
    """The pub/sub connection must be replaced (EOF, heartbeat, desync)."""


class RedisBus:
    """A :class:`~tidings.core.ports.bus.Bus` on Redis pub/sub (see the module doc)."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        on_reconnect: Callable[[], None] | None = None,
    ) -> None:
        self._url = url
        self._prefix = prefix
        self._prefix_b = prefix.encode()
        self._on_reconnect = on_reconnect
        self._handler: Handler | None = None
        self._wanted: set[str] = set()
        self._healthy = False
        self._closed = False
        self._ever_connected = False
        # Pub/sub side: the live connection (None while disconnected), the
        # replies it owes in send order, and a lock that keeps 'append to
        # _acks' and 'write the command' in the same order across tasks.
        self._conn: AbstractConnection | None = None
        self._acks: deque[_Pending] = deque()
        self._write_lock = asyncio.Lock()
        self._reader: asyncio.Task[None] | None = None
        # Set once the first connection attempt has an outcome, so that
        # ``start`` returns at once when Redis refuses rather than waiting.
        self._first_attempt = asyncio.Event()
        # Publishing side.
        self._client = aioredis.Redis.from_url(
            url,
            protocol=2,
            socket_connect_timeout=CONNECT_TIMEOUT_S,
            socket_timeout=PUBLISH_TIMEOUT_S,
            retry=Retry(NoBackoff(), 0),  # we fail fast; the store repairs
            max_connections=4,
        )
        self._outbox: deque[tuple[bytes, bytes, asyncio.Future[None]]] = deque()
        self._outbox_event = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        on_reconnect: Callable[[], None] | None = None,
    ) -> RedisBus:
        """Build from a ``redis://`` / ``rediss://`` / ``unix://`` URL."""
        return cls(url, prefix=prefix, on_reconnect=on_reconnect)

    @property
    def healthy(self) -> bool:
        """True while the pub/sub connection is up and every wanted topic is
        subscribed on it, i.e. live delivery to this node works."""
        return self._healthy

    @property
    def prefix(self) -> str:
        return self._prefix

    # -- lifecycle ---------------------------------------------------------

    async def start(self, handler: Handler, on_gap: GapHandler | None = None) -> None:
        """Connect and start the reader; ``on_gap`` (if given) replaces the
        constructor's ``on_reconnect``.

        Waits (bounded) for the first connection but does not fail if Redis is
        down: the node starts not ready (``ping`` raises) and the reader keeps
        trying, so a node and Redis may be started in any order.
        """
        if self._closed:
            raise RuntimeError("RedisBus is closed")
        self._handler = handler
        if on_gap is not None:
            self._on_reconnect = on_gap
        if self._reader is None:
            self._reader = asyncio.create_task(self._run(), name="redis-bus-reader")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CONNECT_TIMEOUT_S + 0.5):
                await self._first_attempt.wait()
        if not self._healthy:
            log.warning("redis bus not connected yet; retrying in the background")

    async def close(self) -> None:
        """Stop the reader and writer and close both connections (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._healthy = False
        self._handler = None
        for task in (self._reader, self._writer):
            if task is not None:
                task.cancel()
        for task in (self._reader, self._writer):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._reader = self._writer = None
        while self._outbox:
            _, _, fut = self._outbox.popleft()
            if not fut.done():
                fut.set_exception(_unavailable("redis bus closed"))
        self._wanted.clear()
        await self._client.aclose()

    # -- publish -----------------------------------------------------------

    async def publish(self, topic: str, payload: bytes) -> None:
        """Queue one PUBLISH for the writer and wait (bounded) for Redis to take it.

        Raises ``UNAVAILABLE`` at once while the reader knows Redis is
        unreachable, and after ``PUBLISH_TIMEOUT_S`` if Redis does not answer.
        """
        if self._closed:
            raise _unavailable("redis bus closed")
        if self._reader is not None and not self._healthy:
            raise _unavailable("redis bus disconnected")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._outbox.append((self._prefix_b + topic.encode(), payload, fut))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_loop(), name="redis-bus-writer")
        self._outbox_event.set()
        try:
            await asyncio.wait_for(fut, PUBLISH_TIMEOUT_S)
        except TimeoutError:
            raise _unavailable("redis publish timed out") from None

    async def _write_loop(self) -> None:
        """Send queued PUBLISHes in call order, one pipeline per batch."""
        while True:
            if not self._outbox:
                self._outbox_event.clear()
                await self._outbox_event.wait()
                continue
            batch: list[tuple[bytes, bytes, asyncio.Future[None]]] = []
            while self._outbox and len(batch) < MAX_PUBLISH_BATCH:
                item = self._outbox.popleft()
                if not item[2].done():  # a caller that timed out is not sent late
                    batch.append(item)
            if not batch:
                continue
            try:
                pipe = self._client.pipeline(transaction=False)
                for channel, payload, _ in batch:
                    _queued = pipe.publish(channel, payload)  # runs at execute()
                results = await pipe.execute(raise_on_error=False)
            except Exception as exc:
                error = _unavailable(f"redis publish failed: {exc}")
                for _, _, fut in batch:
                    if not fut.done():
                        fut.set_exception(error)
                continue
            for (_, _, fut), result in zip(batch, results, strict=True):
                if fut.done():
                    continue
                if isinstance(result, Exception):
                    fut.set_exception(_unavailable(f"redis publish failed: {result}"))
                else:
                    fut.set_result(None)

    # -- subscriptions -----------------------------------------------------

    async def subscribe(self, topic: str) -> None:
        """Want ``topic``; returns once Redis confirmed it (or, when
        disconnected, at once: the reconnect subscribes it)."""
        if self._closed or topic in self._wanted:
            return
        self._wanted.add(topic)
        await self._command(b"subscribe", topic)

    async def unsubscribe(self, topic: str) -> None:
        """Stop wanting ``topic``; nothing more of it reaches the handler,
        even messages Redis already sent before confirming."""
        if self._closed or topic not in self._wanted:
            return
        self._wanted.discard(topic)
        await self._command(b"unsubscribe", topic)

    async def _command(self, kind: bytes, topic: str) -> None:
        channel = self._prefix_b + topic.encode()
        async with self._write_lock:
            conn = self._conn
            if conn is None:
                return  # applied from _wanted on reconnect
            waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            self._acks.append(_Pending(kind, channel, waiter))
            try:
                await conn.send_command(kind.upper(), channel, check_health=False)
            except Exception:
                log.debug("redis bus send failed; the reader will reconnect", exc_info=True)
                return
        try:
            async with asyncio.timeout(CONFIRM_TIMEOUT_S):
                await waiter
        except TimeoutError:
            log.warning("redis did not confirm %s %s in time", kind.decode(), topic)

    # -- health ------------------------------------------------------------

    async def ping(self) -> None:
        """Readiness: raise ``UNAVAILABLE`` unless live delivery works and
        Redis answers a PING within ``PING_TIMEOUT_S``."""
        if self._closed:
            raise _unavailable("redis bus closed")
        if self._reader is not None and not self._healthy:
            raise _unavailable("redis bus disconnected (reconnecting)")
        try:
            async with asyncio.timeout(PING_TIMEOUT_S):
                await self._client.ping()
        except Exception as exc:
            raise _unavailable(f"redis unreachable: {exc}") from exc

    # -- the reader --------------------------------------------------------

    def _new_connection(self) -> AbstractConnection:
        pool = aioredis.ConnectionPool.from_url(
            self._url,
            protocol=2,
            socket_connect_timeout=CONNECT_TIMEOUT_S,
            socket_timeout=CONNECT_TIMEOUT_S,  # handshake and writes only
            retry=Retry(NoBackoff(), 0),  # reconnecting is our job, not redis-py's
        )
        conn: AbstractConnection = pool.connection_class(**pool.connection_kwargs)
        return conn

    async def _run(self) -> None:
        """Connect, serve, and on any loss reconnect with backoff, forever."""
        attempt = 0
        while True:
            conn = self._new_connection()
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT_S):
                    await conn.connect()  # type: ignore[no-untyped-call]  # redis-py untyped
            except Exception as exc:
                with contextlib.suppress(Exception):
                    await conn.disconnect(nowait=True)
                level = logging.WARNING if attempt == 0 else logging.DEBUG
                log.log(level, "redis bus cannot connect: %s", exc)
                self._first_attempt.set()
            else:
                try:
                    await self._serve(conn)
                except _ConnectionLost as exc:
                    log.warning("redis bus connection lost: %s", exc)
                except Exception as exc:
                    log.warning("redis bus connection lost: %r", exc)
                finally:
                    was_healthy = self._healthy
                    self._first_attempt.set()
                    self._lost()
                    with contextlib.suppress(Exception):
                        await conn.disconnect(nowait=True)
                    with contextlib.suppress(Exception):
                        await self._client.connection_pool.disconnect()
                if was_healthy:
                    attempt = 0
            await asyncio.sleep(backoff_delay(attempt))
            attempt += 1

    def _lost(self) -> None:
        """Forget the connection: the wanted set stays, pending waiters return."""
        self._healthy = False
        self._conn = None
        while self._acks:
            pending = self._acks.popleft()
            if pending.waiter is not None and not pending.waiter.done():
                pending.waiter.set_result(False)

    async def _serve(self, conn: AbstractConnection) -> None:
        """Re-subscribe the wanted set, then read until the connection fails."""
        loop = asyncio.get_running_loop()
        resubscribed: asyncio.Future[bool] = loop.create_future()
        async with self._write_lock:
            self._conn = conn
            self._acks.clear()
            channels = [self._prefix_b + t.encode() for t in self._wanted]
            for start in range(0, len(channels), RESUBSCRIBE_CHUNK):
                chunk = channels[start : start + RESUBSCRIBE_CHUNK]
                for channel in chunk:
                    self._acks.append(_Pending(b"subscribe", channel, None))
                await conn.send_command("SUBSCRIBE", *chunk, check_health=False)
            # The reply to this PING comes after every confirmation above.
            self._acks.append(_Pending(b"pong", b"", resubscribed))
            await conn.send_command("PING", check_health=False)
        ping_outstanding = True
        ping_sent = time.monotonic()
        while True:
            reply = await conn.read_response(
                timeout=HEARTBEAT_INTERVAL_S, disconnect_on_error=False
            )
            if reply is None:  # silence for a whole interval
                if ping_outstanding and time.monotonic() - ping_sent >= HEARTBEAT_INTERVAL_S:
                    raise _ConnectionLost("no heartbeat reply")
                async with self._write_lock:
                    self._acks.append(_Pending(b"pong", b"", None))
                    await conn.send_command("PING", check_health=False)
                ping_outstanding = True
                ping_sent = time.monotonic()
                continue
            ping_outstanding = False  # any byte proves the connection alive
            self._dispatch(reply)
            if not self._healthy and resubscribed.done():
                self._became_healthy()

    def _became_healthy(self) -> None:
        reconnect = self._ever_connected or bool(self._wanted)
        self._ever_connected = True
        self._healthy = True
        self._first_attempt.set()
        if reconnect:
            log.info("redis bus reconnected", extra={"topics": len(self._wanted)})
            if self._on_reconnect is not None:
                try:
                    self._on_reconnect()
                except Exception:
                    log.exception("on_reconnect callback failed")

    def _dispatch(self, reply: object) -> None:
        if isinstance(reply, list) and len(reply) >= 2:
            kind = reply[0]
            if kind == b"message" and len(reply) == 3:
                channel, payload = reply[1], reply[2]
                topic = bytes(channel)[len(self._prefix_b) :].decode()
                handler = self._handler
                if handler is not None and topic in self._wanted:
                    try:
                        handler(topic, bytes(payload))
                    except Exception:
                        log.exception("bus handler failed", extra={"topic": topic})
                return
            if kind in (b"subscribe", b"unsubscribe", b"pong"):
                self._ack(kind, bytes(reply[1]) if kind != b"pong" else b"")
                return
        elif reply == b"PONG":  # PING outside subscribed mode (no topics)
            self._ack(b"pong", b"")
            return
        if isinstance(reply, ResponseError):
            raise _ConnectionLost(f"redis error on pub/sub connection: {reply}")
        log.warning("unexpected reply on the pub/sub connection: %r", reply)

    def _ack(self, kind: bytes, channel: bytes) -> None:
        if not self._acks:
            raise _ConnectionLost(f"unsolicited {kind!r} reply")
        pending = self._acks.popleft()
        if pending.kind != kind or pending.channel != channel:
            raise _ConnectionLost(f"reply {kind!r} {channel!r} does not match {pending.kind!r}")
        if pending.waiter is not None and not pending.waiter.done():
            pending.waiter.set_result(True)
