"""What a connection's frames mean: the dispatch from decoded frames to the
chat service, and from its answers and rejections to server frames.

A connection's sends and cursor moves (``delivered``, ``read``) are answered
in tasks of their own, up to ``frames_in_flight`` at once, so that a client
with a burst to send does not wait a commit per frame: one frame per commit
capped every sender at one message per writer cycle whatever its window
(docs/benchmarks.md, "Scale targets, re-measured 2026-12-02 04:00-04:12 UTC",
"What changed, and what it measured" has the figures). They enter the store
in arrival order, so two sends of one connection still get seqs in the order
they were sent (every store takes writes in call order: the contract in
``core/ports/store/messages.py``). Every other frame waits until those before
it are answered: a ``sync`` after a ``send`` sees it.

Any :class:`TidingsError` becomes an ``error`` frame answering that frame
only; an unexpected exception becomes ``internal`` and is logged, and in both
cases the connection (and everyone else's) goes on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from functools import partial
from typing import NoReturn

from tidings.core.auth import AuthService
from tidings.core.errors import ErrorCode, TidingsError
from tidings.core.frames import (
    ClientFrame,
    ConversationCursor,
    Delivered,
    FrameError,
    Hello,
    Limits,
    Ping,
    Pong,
    PresenceIn,
    PresenceSubscribe,
    Read,
    Reconcile,
    Reconciled,
    Send,
    Sync,
    SyncDone,
    TypingIn,
    Welcome,
    decode_client_frame,
    encode,
    error_frame,
)
from tidings.core.ids import now_ms
from tidings.core.loop import LoopRef
from tidings.core.models import Device, Message, ReconcileGap
from tidings.core.service import ChatService, ack, msg_frame
from tidings.core.trace import SendStamps, Tracer
from tidings.gateway.connection import Connection, State
from tidings.gateway.notice import RestoreNotice
from tidings.gateway.presence import PresenceHub
from tidings.gateway.registry import LocalRegistry
from tidings.observability.metrics import Metrics
from tidings.observability.network_metrics import NetworkMetrics
from tidings.settings import Settings

log = logging.getLogger("tidings.gateway")

# The frames a connection may have several of in flight (see the module doc).
_OVERLAPPING = (Send, Delivered, Read)

NODE_IN_FLIGHT = 8192
"""Beyond this many frames in flight on the node, a connection reads its next
frame only once one of its own is answered, as if its limit were one. This
is under a second of the SQLite writer's work at the rate measured when the
bound was set (docs/benchmarks.md, "Figures behind design choices (from code
comments)"), so more in flight only queue; and it bounds the memory that a
crowd of clients sending as fast as they can holds in the server (a send may
carry 64 KiB of content)."""


class Unauthorized(Exception):
    """The hello was refused: the caller closes the socket with 4001."""


class SessionHandler:
    """Turns one connection's frames into service calls (shared by all connections)."""

    def __init__(
        self,
        service: ChatService,
        auth: AuthService,
        registry: LocalRegistry,
        metrics: Metrics,
        settings: Settings,
        presence: PresenceHub,
        tracer: Tracer,
        network: NetworkMetrics,
    ) -> None:
        self._presence = presence
        self._tracer = tracer
        self._network = network
        self._service = service
        self._auth = auth
        self._registry = registry
        self._metrics = metrics
        self._settings = settings
        self._depth = max(1, settings.frames_in_flight)
        self._in_flight = metrics.frames_in_flight
        self._loop = LoopRef()
        self._restore_notice: RestoreNotice | None = None
        self.idle = asyncio.Event()
        """Set while none is in flight."""
        self.idle.set()
        self._limits = Limits(
            max_content_bytes=settings.max_content_bytes,
            max_frame_bytes=settings.max_frame_bytes,
            typing_ttl_ms=settings.typing_ttl_ms,
            max_group_members=settings.max_group_members,
            send_rate_per_s=settings.send_rate_per_s,
            send_burst=settings.send_burst,
        )

    async def load_restore_notice(self) -> None:
        """Read the latest restore (once, at start; see gateway/notice.py)."""
        restore = await self._service.latest_restore()
        period_s = self._settings.restore_notice_s
        self._restore_notice = None if restore is None else RestoreNotice(restore, period_s)

    @property
    def in_flight(self) -> int:
        """Sends and cursor moves received and not yet answered (a drain waits for them)."""
        return int(self._in_flight.value)

    def _reply(self, conn: Connection, kind: str, payload: bytes) -> None:
        if conn.write(payload):
            self._metrics.frame_out(kind)

    def reject(self, conn: Connection, error: TidingsError, ref: str | None = None) -> None:
        self._metrics.errors.labels(error.code.value).inc()
        self._reply(conn, "error", encode(error_frame(error, ref)))

    def _refuse_before_hello(self, conn: Connection, ref: str | None) -> NoReturn:
        self.reject(
            conn, TidingsError(ErrorCode.UNAUTHORIZED, "the first frame must be hello"), ref
        )
        raise Unauthorized

    def _over_rate(self, conn: Connection, now: float) -> TidingsError | None:
        """Take a token from the connection's frame bucket (every frame counts,
        valid or not, so that a garbage flood is throttled like any other)."""
        wait_ms = conn.frame_bucket.try_take(now)
        if not wait_ms:
            return None
        return TidingsError(ErrorCode.RATE_LIMITED, "too many frames", retry_after_ms=wait_ms)

    def handle_binary(self, conn: Connection) -> None:
        """Binary frames are not part of the protocol; before hello they end the session."""
        now = time.monotonic()
        conn.last_recv = now
        self._metrics.frame_in("other")
        if conn.state is State.AWAITING_HELLO:
            self._refuse_before_hello(conn, None)
        limited = self._over_rate(conn, now)
        self.reject(
            conn, limited or TidingsError(ErrorCode.BAD_FRAME, "frames must be text (JSON)")
        )

    async def handle(self, conn: Connection, data: str | bytes) -> None:
        """Handle one text frame; raises :class:`Unauthorized` to close with 4001."""
        now = time.monotonic()
        conn.last_recv = now
        limited = self._over_rate(conn, now) if conn.state is State.OPEN else None
        try:
            frame = decode_client_frame(
                data, self._settings.max_content_bytes, self._service.content_kinds
            )
        except FrameError as exc:
            self._metrics.frame_in("other")
            if conn.state is State.AWAITING_HELLO:
                self._refuse_before_hello(conn, exc.ref)
            self.reject(conn, limited or exc, exc.ref)
            return
        kind = type(frame).__struct_config__.tag
        self._metrics.frame_in(str(kind))
        if conn.state is State.AWAITING_HELLO:
            await self._hello(conn, frame)
            return
        if limited is not None:
            self.reject(conn, limited, _ref(frame))
            return
        if isinstance(frame, _OVERLAPPING):
            await self._start(conn, frame)
            return
        if conn.in_flight:
            await asyncio.wait(tuple(conn.in_flight))
        await self._answer(conn, frame)

    async def _start(self, conn: Connection, frame: Send | Delivered | Read) -> None:
        """Answer ``frame`` in a task of its own. Wait only while the connection
        has its limit in flight (or the node has :data:`NODE_IN_FLIGHT`): its
        socket is not read meanwhile, so TCP pushes back on the client and a
        flood holds bounded memory."""
        tasks = conn.in_flight
        if tasks is None:
            tasks = conn.in_flight = set()
        self._in_flight.inc()
        self.idle.clear()
        task = self._loop.get().create_task(self._answer(conn, frame))
        tasks.add(task)
        task.add_done_callback(partial(self._answered, conn))
        if len(tasks) >= self._depth or self._in_flight.value > NODE_IN_FLIGHT:
            await asyncio.wait(tuple(tasks), return_when=asyncio.FIRST_COMPLETED)

    def _answered(self, conn: Connection, task: asyncio.Task[None]) -> None:
        self._in_flight.dec()
        if not self._in_flight.value:
            self.idle.set()
        tasks = conn.in_flight
        if tasks is not None:
            tasks.discard(task)
            if not tasks:
                conn.in_flight = None

    async def _answer(self, conn: Connection, frame: ClientFrame) -> None:
        try:
            await self._dispatch(conn, frame)
        except TidingsError as exc:
            self.reject(conn, exc, _ref(frame))
        except Exception:
            log.exception("frame handling failed", extra={"session_id": conn.session_id})
            self.reject(conn, TidingsError(ErrorCode.INTERNAL, "internal error"), _ref(frame))

    async def _hello(self, conn: Connection, frame: ClientFrame) -> None:
        if not isinstance(frame, Hello):
            self._refuse_before_hello(conn, _ref(frame))
        try:
            device = await self._auth.authenticate(frame.token)
            states = await self._service.list_conversations(device)
        except TidingsError as exc:
            self.reject(conn, exc, frame.id)
            raise Unauthorized from None
        conn.device = device
        if frame.client is not None:
            conn.network = frame.client.network
        conn.transition(State.OPEN)
        await self._registry.add(conn, ((s.conversation_id, s.last_seq) for s in states))
        self._metrics.connections.inc()
        server_time = now_ms()
        welcome = Welcome(
            user_id=device.user_id,
            device_id=device.device_id,
            session_id=conn.session_id,
            epoch=self._service.epoch,
            heartbeat_ms=self._settings.heartbeat_ms,
            server_time=server_time,
            limits=self._limits,
            id=frame.id,
        )
        self._reply(conn, "welcome", encode(welcome))
        notice = self._restore_notice
        if notice is not None and (payload := notice.frame_at(server_time)) is not None:
            self._reply(conn, "notice", payload)
        self._presence.opened(conn, [s.conversation_id for s in states])

    async def _dispatch(self, conn: Connection, frame: ClientFrame) -> None:
        device = conn.device
        assert device is not None
        if isinstance(frame, Send):
            await self._send(conn, device, frame)
        elif isinstance(frame, Delivered | Read):
            await self._cursor(conn, device, frame)
        elif isinstance(frame, Sync):
            await self._sync(conn, frame)
        elif isinstance(frame, Ping):
            self._reply(conn, "pong", encode(Pong(id=frame.id)))
        elif isinstance(frame, Hello):
            raise TidingsError(ErrorCode.BAD_FRAME, "hello was already received")
        elif isinstance(frame, TypingIn):
            await self._presence.typing(conn, frame.conversation_id, frame.state)
        elif isinstance(frame, PresenceIn):
            await self._presence.set_status(conn, frame.status)
        elif isinstance(frame, PresenceSubscribe):
            await self._presence.subscribe(conn, frame.user_ids)
        elif isinstance(frame, Reconcile):
            await self._reconcile(conn, frame)

    async def _send(self, conn: Connection, device: Device, frame: Send) -> None:
        started = time.perf_counter()
        tracer = self._tracer
        stamps = SendStamps(time.time()) if tracer.on else None
        outcomes = self._network.sends[conn.network]
        try:
            result = await self._service.send(
                device,
                frame.conversation_id,
                frame.client_msg_id,
                bytes(frame.content),
                origin_session=conn.session_id,
                order=conn.append_order(),
                stamps=stamps,
            )
        except TidingsError:
            outcomes["refused"].inc()
            raise
        self._reply(conn, "ack", encode(ack(result, frame.id)))
        self._metrics.ack_latency.observe(time.perf_counter() - started)
        if result.duplicate:
            outcomes["duplicate"].inc()
            return
        outcomes["stored"].inc()
        if stamps is not None:
            tracer.sent(result.message, device, conn.network, stamps)

    async def _cursor(self, conn: Connection, device: Device, frame: Delivered | Read) -> None:
        is_read = isinstance(frame, Read)
        cid, seq = frame.conversation_id, frame.seq
        low = seq
        # Either frame says the client holds everything up to seq.
        entry = conn.unacked.get(cid) if conn.unacked is not None else None
        if entry is not None and seq >= entry.low:
            low = entry.low
            if seq >= entry.high:
                waited = time.monotonic() - entry.sent_at
                self._network.client_ack[conn.network].observe(waited)
        conn.acknowledged(cid, seq)
        await self._service.advance_cursors(
            device, cid, None if is_read else seq, seq if is_read else None
        )
        tracer = self._tracer
        if tracer.sampled_range(cid, low, seq):
            stage = "read" if is_read else "client_acked"
            tracer.cursor_moved(stage, cid, seq, device.user_id, device.device_id, conn.network)

    def _trace_synced(self, conn: Connection, messages: list[Message]) -> None:
        device = conn.device
        assert device is not None
        target = [(device.user_id, device.device_id, conn.network)]
        tracer = self._tracer
        for message in messages:
            if tracer.sampled(message.conversation_id, message.seq):
                tracer.delivered(message.conversation_id, message.seq, target, "synced")

    async def _reconcile(self, conn: Connection, frame: Reconcile) -> None:
        """Store the device's report for ops review (``tidings restore report``)."""
        device = conn.device
        assert device is not None
        gaps = [
            ReconcileGap(c.conversation_id, c.server_last_seq, c.held_last_seq, c.own, c.others)
            for c in frame.conversations
        ]
        await self._service.reconcile(device, frame.epoch, gaps)
        answer = Reconciled(epoch=frame.epoch, conversations=len(gaps), id=frame.id)
        self._reply(conn, "reconciled", encode(answer))

    async def _sync(self, conn: Connection, frame: Sync) -> None:
        assert conn.device is not None
        answer = await self._service.sync(conn.device, frame.since, frame.cursors, frame.limit)
        self._network.sync_sizes[conn.network].observe(len(answer.messages))
        for message in answer.messages:
            self._reply(conn, "msg", msg_frame(message))
        if self._tracer.on:
            self._trace_synced(conn, answer.messages)
        now = now_ms()
        done = SyncDone(
            id=frame.id,
            token=answer.token,
            more=answer.more,
            conversations=[
                ConversationCursor(
                    conversation_id=s.conversation_id,
                    last_seq=s.last_seq,
                    delivered_seq=s.delivered_seq,
                    read_seq=s.read_seq,
                    unread=s.unread,
                    mentions=s.mentions,
                    history_start=s.history_start,
                    muted=s.settings.muted(now),
                    archived=s.settings.archived,
                    pinned=s.settings.pinned,
                )
                for s in answer.conversations
            ],
        )
        self._reply(conn, "sync_done", encode(done))


def _ref(frame: ClientFrame) -> str | None:
    if frame.id is not None:
        return frame.id
    if isinstance(frame, Send):
        return frame.client_msg_id
    return None
