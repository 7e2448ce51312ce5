"""Delivery of bus events to this node's connections.

The bus calls :meth:`Fanout.on_bus` synchronously for every event on a topic
the node listens to. A message is framed once and the same bytes are written
to every local connection of every member (except the sender's connection,
which got its ``ack``). Nothing here awaits per recipient; only a member-list
cache miss defers the delivery to a task.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from typing import Any

from tidings.core.events import (
    DisabledEvent,
    JoinedEvent,
    MessageEvent,
    ReceiptEvent,
    RevokedEvent,
    SignedOutEvent,
    TypingEvent,
    UserFrameEvent,
    decode_event,
)
from tidings.core.frames import Receipt, encode
from tidings.core.membership import MemberCache
from tidings.core.trace import Tracer
from tidings.gateway.presence import PresenceHub
from tidings.gateway.receipts import ReceiptAggregator
from tidings.gateway.registry import LocalRegistry
from tidings.gateway.wsframe import text_frame
from tidings.observability.metrics import Metrics

log = logging.getLogger("tidings.fanout")

# How long an event that overtook an earlier seq waits for it. Commits of one
# conversation land within milliseconds of each other; a seq missing longer
# than this was lost on the bus and is repaired by redelivery or sync.
REORDER_WAIT_S = 0.2
# Receipt cursors remembered per node to keep receipts monotonic (FM3 bound).
MAX_RECEIPT_CURSORS = 100_000
# Bound on events held for one conversation while waiting (FM3).
MAX_HELD_PER_CONVERSATION = 10_000


class Fanout:
    def __init__(
        self,
        registry: LocalRegistry,
        members: MemberCache,
        metrics: Metrics,
        receipt_detail_max_members: int,
        aggregator: ReceiptAggregator,
        close_sessions: Callable[[str, str | None, bytes], None],
        presence: PresenceHub,
        tracer: Tracer,
    ) -> None:
        self._presence = presence
        self._tracer = tracer
        self._close_sessions = close_sessions
        self._registry = registry
        self._members = members
        self._metrics = metrics
        self._detail_max = receipt_detail_max_members
        self._aggregator = aggregator
        self._tasks: set[asyncio.Task[None]] = set()
        # Conversations whose member list is being loaded, with the events
        # that arrived meanwhile (delivered in arrival order once it is in).
        self._loading: dict[str, list[MessageEvent | ReceiptEvent | TypingEvent]] = {}
        # Events that arrived ahead of a missing seq, and the timer that stops
        # waiting for it (see _in_order).
        self._held: dict[str, dict[int, MessageEvent]] = {}
        # The cursors last shown per (conversation, member), so that receipts
        # never move back (an LRU: bounded memory).
        self._receipts_sent: OrderedDict[tuple[str, str], tuple[int, int]] = OrderedDict()
        self._timers: dict[str, asyncio.TimerHandle] = {}

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("fan-out task failed", exc_info=task.exception())

    def on_bus(self, topic: str, payload: bytes) -> None:
        try:
            event = decode_event(payload)
        except Exception:
            log.exception("undecodable bus event", extra={"topic": topic})
            return
        if isinstance(event, JoinedEvent):
            self._spawn(
                self._registry.joined(event.user_id, event.conversation_id, event.after_seq)
            )
        elif isinstance(event, RevokedEvent):
            self._close_sessions(event.user_id, event.device_id, b"token revoked")
        elif isinstance(event, DisabledEvent):
            self._close_sessions(event.user_id, None, b"account disabled")
        elif isinstance(event, SignedOutEvent):
            self._close_sessions(event.user_id, None, b"signed out everywhere")
        elif isinstance(event, UserFrameEvent):
            self._registry.write_to_user(event.user_id, text_frame(event.frame))
        elif isinstance(event, MessageEvent):
            for ready in self._in_order(event):
                self._route(ready)
        else:
            self._route(event)

    def _in_order(self, event: MessageEvent) -> list[MessageEvent]:
        """The events that can go out now, in seq order.

        Writers on several nodes (or several database connections) finish in
        any order, so events can arrive as 5, 4. An event beyond the next
        expected seq waits (at most ``REORDER_WAIT_S``) for the ones before
        it; a missing one is then given up on (its recipients repair by
        redelivery or sync). Events of conversations the node did not follow
        from a known seq, or below it (late), go out at once.
        """
        cid = event.conversation_id
        expected = self._registry.next_seq.get(cid)
        if expected is None or event.seq < expected:
            return [event]
        held = self._held.get(cid)
        if event.seq > expected:
            if held is None:
                held = self._held[cid] = {}
                loop = asyncio.get_running_loop()
                self._timers[cid] = loop.call_later(REORDER_WAIT_S, self._stop_waiting, cid)
            held[event.seq] = event
            if len(held) > MAX_HELD_PER_CONVERSATION:
                self._stop_waiting(cid)
            return []
        ready = [event]
        following = expected + 1
        while held and following in held:
            ready.append(held.pop(following))
            following += 1
        self._registry.next_seq[cid] = following
        if held is not None and not held:
            del self._held[cid]
            self._timers.pop(cid).cancel()
        return ready

    def _stop_waiting(self, cid: str) -> None:
        """Deliver what was held for a conversation, in order, past the gap."""
        held = self._held.pop(cid, {})
        timer = self._timers.pop(cid, None)
        if timer is not None:
            timer.cancel()
        if not held:
            return
        log.info(
            "gap in the live stream; delivering past it",
            extra={"conversation_id": cid, "held": len(held)},
        )
        for seq in sorted(held):
            self._route(held[seq])
        if cid in self._registry.next_seq:
            self._registry.next_seq[cid] = max(held) + 1

    def _route(self, event: MessageEvent | ReceiptEvent | TypingEvent) -> None:
        cid = event.conversation_id
        if isinstance(event, MessageEvent) and event.membership_changed:
            self._members.invalidate(cid)
        waiting = self._loading.get(cid)
        if waiting is not None:
            waiting.append(event)  # keep seq order behind the load in flight
            return
        members = self._members.peek(cid)
        if members is None:
            self._loading[cid] = [event]
            self._spawn(self._load_then_dispatch(cid))
        else:
            self._dispatch(event, members)

    def _dispatch(
        self, event: MessageEvent | ReceiptEvent | TypingEvent, members: frozenset[str]
    ) -> None:
        if isinstance(event, MessageEvent):
            self._deliver(event, members)
        elif isinstance(event, TypingEvent):
            self._presence.deliver_typing(event, members)
        else:
            self._receipt(event, members)

    async def _load_then_dispatch(self, conversation_id: str) -> None:
        """Load the member list, then deliver every event queued behind the
        load in arrival order (events arriving meanwhile join the queue)."""
        queue = self._loading[conversation_id]
        try:
            while queue:
                event = queue.pop(0)
                if isinstance(event, MessageEvent) and event.membership_changed:
                    self._members.invalidate(conversation_id)
                members = self._members.peek(conversation_id)
                if members is None:
                    members = await self._members.get(conversation_id)
                self._dispatch(event, members)
        except Exception:
            # Live delivery is the fast path: recipients repair by sync.
            log.exception(
                "fan-out dropped events after a failed member lookup",
                extra={"conversation_id": conversation_id, "dropped": len(queue)},
            )
        finally:
            self._loading.pop(conversation_id, None)

    def _deliver(self, event: MessageEvent, members: frozenset[str]) -> None:
        frame = text_frame(event.frame)
        origin = event.origin_session
        cid, seq = event.conversation_id, event.seq
        now = time.monotonic()
        sent = 0
        registry = self._registry
        recipients: frozenset[str] | set[str] = members
        if event.extra_recipients:
            recipients = set(members) | set(event.extra_recipients)
        # The devices written to, when the message is traced (one test per
        # recipient otherwise).
        traced: list[tuple[str, str, str]] | None = [] if self._tracer.sampled(cid, seq) else None
        for user_id in recipients:
            conns = registry.connections_of(user_id)
            if conns is None:
                continue
            for conn in tuple(conns):
                if conn.session_id != origin and conn.write_frame(frame):
                    conn.track(cid, seq, now)
                    sent += 1
                    if traced is not None and conn.device is not None:
                        traced.append((user_id, conn.device.device_id, conn.network))
        if sent:
            self._metrics.frame_out("msg", sent)
        if traced:
            self._tracer.delivered(cid, seq, traced, "delivered")
        large = len(members) > self._detail_max
        if large and not event.membership_changed and registry.is_local(event.sender_id):
            self._aggregator.sent(event.conversation_id, event.sender_id, event.seq)
        for user_id in event.extra_recipients:
            self._spawn(self._registry.left(user_id, event.conversation_id))

    def _receipt(self, event: ReceiptEvent, members: frozenset[str]) -> None:
        if len(members) > self._detail_max:
            self._aggregator.cursor_moved(event.conversation_id)
            return
        # Cursors only move forward, but two writers (devices on two nodes)
        # can publish their results in the opposite order to their commits:
        # never show a receipt that moves back.
        key = (event.conversation_id, event.user_id)
        before = self._receipts_sent.get(key)
        delivered, read = event.delivered_seq, event.read_seq
        if before is not None:
            if delivered <= before[0] and read <= before[1]:
                return
            delivered, read = max(delivered, before[0]), max(read, before[1])
            self._receipts_sent.move_to_end(key)
        self._receipts_sent[key] = (delivered, read)
        if len(self._receipts_sent) > MAX_RECEIPT_CURSORS:
            self._receipts_sent.popitem(last=False)
        payload = encode(
            Receipt(
                conversation_id=event.conversation_id,
                user_id=event.user_id,
                delivered_seq=delivered,
                read_seq=read,
            )
        )
        frame = text_frame(payload)
        sent = 0
        for user_id in members:
            if user_id == event.user_id:
                continue
            for conn in tuple(self._registry.connections_of(user_id) or ()):
                if conn.write_frame(frame):
                    sent += 1
        if sent:
            self._metrics.frame_out("receipt", sent)

    async def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._held.clear()
        for task in tuple(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
