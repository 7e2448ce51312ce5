"""The WebSocket endpoint ``/v1/ws`` on aiohttp, and the node's connection housekeeping.

aiohttp was chosen by measurement (docs/architecture.md): with the
``websockets`` library it is the cheapest Python WebSocket stack per idle
connection and per delivery on these machines, and it also serves the HTTP
API on the same port. Its built-in autoping is off: client pings count as
activity for our own heartbeat, which one sweeper task enforces for every
connection (no timer per connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time

from aiohttp import WSMessage, WSMsgType, web

from tidings.core.frames import ErrorFrame, Reconnect, encode
from tidings.core.ids import new_id
from tidings.core.ratelimit import TokenBucket
from tidings.gateway.admission import Admission
from tidings.gateway.connection import CloseCode, Connection, State, WriteHub
from tidings.gateway.presence import PresenceHub
from tidings.gateway.redelivery import Redeliverer
from tidings.gateway.registry import LocalRegistry
from tidings.gateway.session import SessionHandler, Unauthorized
from tidings.observability.metrics import Metrics
from tidings.observability.network_metrics import NetworkMetrics
from tidings.settings import Settings

log = logging.getLogger("tidings.gateway")

# How often the sweeper looks for silent connections and overdue redeliveries,
# as a fraction of the shorter of the two intervals: a dead link is found
# within 2.25 heartbeats at worst, a lost message re-sent within 1.25 timeouts.
SWEEP_FRACTION = 4
# Give a closing handshake this long before the socket is dropped.
CLOSE_TIMEOUT_S = 2.0
# The WebSocket endpoint (app.py routes it here).
WS_PATH = "/v1/ws"
# What ends the receive loop (as it ends aiohttp's `async for msg in ws`).
_ENDED = frozenset({WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED})
# Request heads screen() answers: an upgrade of WS_PATH, with or without a query.
_WS_REQUESTS = (f"GET {WS_PATH} ".encode(), f"GET {WS_PATH}?".encode())


def refusal_body(reason: str, seconds: int) -> bytes:
    """The JSON error of a refused upgrade (the same whoever answers it)."""
    return encode(
        ErrorFrame(
            code="unavailable", message=reason, retryable=True, retry_after_ms=seconds * 1000
        )
    )


def raw_refusal(reason: str, seconds: int) -> bytes:
    """A whole HTTP 503 response, for the acceptor to write on the bare socket."""
    body = refusal_body(reason, seconds)
    return (
        b"HTTP/1.1 503 Service Unavailable\r\n"
        b"Content-Type: application/json; charset=utf-8\r\n"
        b"Retry-After: %d\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
        % (seconds, len(body), body)
    )


_CLOSED_BY_SERVER = {
    CloseCode.GOING_AWAY: "server_shutdown",
    CloseCode.UNAUTHORIZED: "unauthorized",
    CloseCode.HEARTBEAT_TIMEOUT: "heartbeat_timeout",
    CloseCode.HELLO_TIMEOUT: "hello_timeout",
}
"""The ``reason`` label of ``tidings_connection_drops_total`` for the server's closes."""


def _ended_by_client(close_code: int | None) -> str:
    """The reason a session the server did not close ended: a close frame
    from the client, a frame too large (aiohttp closes with 1009), or the
    connection lost without a close (a dead network, a killed app)."""
    if close_code in (CloseCode.NORMAL, CloseCode.GOING_AWAY):
        return "client_closed"
    if close_code == CloseCode.TOO_BIG:
        return "too_big"
    return "lost"


class Gateway:
    def __init__(
        self,
        handler: SessionHandler,
        registry: LocalRegistry,
        metrics: Metrics,
        settings: Settings,
        redeliverer: Redeliverer,
        presence: PresenceHub,
        network: NetworkMetrics,
    ) -> None:
        self._presence = presence
        self._network = network
        self._redeliverer = redeliverer
        self._handler = handler
        self._registry = registry
        self._metrics = metrics
        self._settings = settings
        self._live: dict[str, tuple[Connection, web.WebSocketResponse]] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._cleanup_tasks: set[asyncio.Task[None]] = set()
        self._hub = WriteHub(settings.send_buffer_bytes, self._on_cut)
        self._draining = False
        # Admission control (FM7, gateway/admission.py): a reconnect storm is
        # answered with cheap 503s and spread out instead of taking the node down.
        self._admission = Admission(settings, time.monotonic())

    @property
    def draining(self) -> bool:
        return self._draining

    def room(self) -> int:
        """Sessions this node would still take (0 while draining or full)."""
        return self._admission.room(len(self._live), self._draining)

    @property
    def rejoin_room(self) -> int:
        """The room at which a node that stepped off its shared port comes back."""
        return self._admission.rejoin_room

    def stop_admitting(self) -> None:
        """Refuse new sessions from now on (:meth:`drain`'s first step; room() is 0)."""
        self._draining = True

    async def drain(self) -> None:
        """Graceful shutdown: refuse new sessions, tell every client to
        reconnect after a random delay over the drain window (so that they do
        not all come back at once), wait for sends in flight to be
        acknowledged, then close."""
        self.stop_admitting()
        window_ms = self._settings.drain_window_ms
        for conn, _ in list(self._live.values()):
            if conn.state is State.OPEN:
                after_ms = random.randint(0, window_ms)
                conn.write(encode(Reconnect(after_ms=after_ms, reason="draining")))
        self._hub.flush()
        self._metrics.frame_out("reconnect", len(self._live))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                self._handler.idle.wait(), self._settings.drain_timeout_ms / 1000
            )
        if self._handler.in_flight:
            log.warning("drain timed out", extra={"in_flight": self._handler.in_flight})
        await self.stop()

    async def load_restore_notice(self) -> None:
        """Read the latest restore for the ``restored`` notice (once, at start)."""
        await self._handler.load_restore_notice()

    def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="heartbeat-sweeper")

    async def stop(self) -> None:
        """Close every session (1001); idempotent, and new upgrades are refused."""
        self._draining = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        await asyncio.gather(
            *(
                self._close(conn, ws, CloseCode.GOING_AWAY, b"server shutting down")
                for conn, ws in list(self._live.values())
            ),
            return_exceptions=True,
        )

    def _refuse(self, reason: str, retry_after_s: float) -> web.Response:
        """503 before the upgrade: the client backs off and tries again (or
        elsewhere); a handshake costs the server far more than this answer."""
        self._metrics.handshakes_refused.labels(reason).inc()
        seconds = int(retry_after_s)
        return web.Response(
            status=503,
            headers={"Retry-After": str(seconds)},
            content_type="application/json",
            body=refusal_body(reason, seconds),
        )

    def screen(self, head: bytes) -> bytes | None:
        """The acceptor's first look at a new connection's request head: the
        raw 503 for an upgrade that admission refuses now, else None (the
        request goes on to aiohttp and :meth:`handle`). Under a reconnect herd
        most upgrades are refused, and this way a refusal costs no protocol
        object, parser or handler task."""
        if not head.startswith(_WS_REQUESTS):
            return None
        refusal = self._admission.screen(len(self._live), self._draining, time.monotonic())
        if refusal is None:
            return None
        reason, retry_after_s = refusal
        self._metrics.handshakes_refused.labels(reason).inc()
        return raw_refusal(reason, int(retry_after_s))

    async def handle(self, request: web.Request) -> web.StreamResponse:
        refusal = self._admission.check(len(self._live), self._draining, time.monotonic())
        if refusal is not None:
            return self._refuse(*refusal)
        admitted = time.monotonic()
        ticket = self._admission.admitted(admitted)
        ws = web.WebSocketResponse(
            max_msg_size=self._settings.max_frame_bytes,
            autoping=False,
            compress=False,
            timeout=CLOSE_TIMEOUT_S,
        )
        try:
            await ws.prepare(request)
        except BaseException:
            self._admission.left(ticket)  # the upgrade itself failed
            raise
        transport = request.transport
        assert transport is not None
        now = time.monotonic()
        conn = Connection(
            session_id=new_id("s"),
            transport=transport,
            hub=self._hub,
            frame_bucket=TokenBucket(
                self._settings.frame_rate_per_s, self._settings.frame_burst, now
            ),
            now=now,
        )
        self._live[conn.session_id] = (conn, ws)
        said_hello = False
        answering_hello = False
        try:
            while True:
                # ws.receive() rather than `async for msg in ws`: the iterator's
                # __anext__ frame would stay suspended for the whole life of
                # every idle connection, memory each one pays (docs/benchmarks.md,
                # "Figures behind design choices (from code comments)").
                msg = await ws.receive()
                if msg.type in _ENDED:
                    break
                if msg.type is WSMsgType.TEXT:
                    if not said_hello:
                        said_hello = True
                        answering_hello = True
                        self._admission.hello(ticket)
                    try:
                        await self._handler.handle(conn, msg.data)
                    except Unauthorized:
                        await self._close(conn, ws, CloseCode.UNAUTHORIZED, b"unauthorized")
                        break
                    if answering_hello and conn.state is State.OPEN:
                        welcomed = time.monotonic()
                        self._admission.settled(welcomed, True)
                        self._metrics.handshake_latency.observe(welcomed - admitted)
                        answering_hello = False
                elif not await self._on_control(conn, ws, msg):
                    break
        finally:
            if not said_hello:
                self._admission.left(ticket)
            if answering_hello:
                self._admission.settled(time.monotonic(), False)
            if conn.ended is None:
                conn.ended = _ended_by_client(ws.close_code)
            await self._forget(conn)
        return ws

    async def _on_control(
        self, conn: Connection, ws: web.WebSocketResponse, msg: WSMessage
    ) -> bool:
        """A frame other than text; False ends the session."""
        if msg.type is WSMsgType.PING:
            conn.last_recv = time.monotonic()
            await ws.pong(msg.data)
        elif msg.type is WSMsgType.PONG:
            conn.last_recv = time.monotonic()
        elif msg.type is WSMsgType.BINARY:
            try:
                self._handler.handle_binary(conn)
            except Unauthorized:
                await self._close(conn, ws, CloseCode.UNAUTHORIZED, b"unauthorized")
                return False
        elif msg.type is WSMsgType.ERROR:
            log.info(
                "websocket error",
                extra={"session_id": conn.session_id, "error": str(ws.exception())},
            )
            return False
        return True

    async def repair(self) -> int:
        """After a bus gap, push every live connection what it missed."""
        return await self._redeliverer.repair(c for c, _ in self._live.values())

    def close_sessions(self, user_id: str, device_id: str | None, reason: bytes) -> None:
        """Close (4001) every local session of a device whose token was revoked,
        or with ``device_id`` None every one of a user whose account was disabled."""
        for conn in tuple(self._registry.connections_of(user_id) or ()):
            live = self._live.get(conn.session_id)
            if live is None or conn.device is None:
                continue
            if device_id is None or conn.device.device_id == device_id:
                task = asyncio.get_running_loop().create_task(
                    self._close(conn, live[1], CloseCode.UNAUTHORIZED, reason)
                )
                self._cleanup_tasks.add(task)
                task.add_done_callback(self._cleanup_tasks.discard)

    @staticmethod
    async def _close(
        conn: Connection, ws: web.WebSocketResponse, code: CloseCode, reason: bytes
    ) -> None:
        """Close after the frames held for this turn (an error must precede its close)."""
        if conn.ended is None:
            conn.ended = _CLOSED_BY_SERVER.get(code, "server_closed")
        conn.flush()
        await ws.close(code=code, message=reason)

    async def _forget(self, conn: Connection) -> None:
        self._live.pop(conn.session_id, None)
        if conn.state is State.OPEN:
            self._metrics.connections.dec()
            self._network.dropped(conn.network, conn.ended or "lost")
        if conn.state is not State.CLOSED:
            conn.transition(State.CLOSED)
        await self._registry.remove(conn)
        if conn.device is not None:
            self._presence.closed(conn)

    def _on_cut(self, conn: Connection) -> None:
        self._metrics.slow_consumers.inc()
        conn.ended = "slow_consumer"
        if conn.session_id in self._live:
            task = asyncio.get_running_loop().create_task(self._forget(conn))
            self._cleanup_tasks.add(task)
            task.add_done_callback(self._cleanup_tasks.discard)

    async def _sweep_forever(self) -> None:
        shortest_ms = min(self._settings.heartbeat_ms, self._settings.redelivery_ms)
        interval = shortest_ms / 1000 / SWEEP_FRACTION
        while True:
            await asyncio.sleep(interval)
            try:
                now = time.monotonic()
                await self.sweep(now)
                await self._redeliverer.run_once((c for c, _ in self._live.values()), now)
            except Exception:
                log.exception("connection sweep failed")

    async def sweep(self, now: float) -> None:
        """Close connections silent for 2 heartbeats, or without hello in time."""
        idle_limit = 2 * self._settings.heartbeat_ms / 1000
        hello_limit = self._settings.hello_timeout_ms / 1000
        doomed: list[tuple[Connection, web.WebSocketResponse, CloseCode, bytes]] = []
        for conn, ws in self._live.values():
            silent = now - conn.last_recv
            if conn.state is State.AWAITING_HELLO and silent > hello_limit:
                doomed.append((conn, ws, CloseCode.HELLO_TIMEOUT, b"no hello in time"))
            elif conn.state is State.OPEN and silent > idle_limit:
                doomed.append((conn, ws, CloseCode.HEARTBEAT_TIMEOUT, b"heartbeat timeout"))
        await asyncio.gather(
            *(self._close(conn, ws, code, reason) for conn, ws, code, reason in doomed),
            return_exceptions=True,
        )
