"""Redelivery of live messages a connection has not acknowledged, and repair
of every connection after the bus lost messages.

A ``msg`` written to a socket can still be lost: the client's app was killed
before storing it, or a proxy dropped it. Each connection remembers, per
conversation, the range of live seqs it was given and not yet covered by a
cumulative ``delivered`` (see :meth:`Connection.track`). One periodic pass
over the node's connections re-sends, from the store (through the chat
service), what has waited longer than ``redelivery_ms``. It is bounded per
pass and per connection, and gives up after a few attempts: by then the
heartbeat has either closed a dead connection or the client will ``sync``,
which repairs anything.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

from tidings.core.service import ChatService, msg_frame
from tidings.core.trace import Tracer
from tidings.gateway.connection import Connection, State
from tidings.gateway.wsframe import text_frame
from tidings.observability.metrics import Metrics
from tidings.observability.network_metrics import NetworkMetrics

log = logging.getLogger("tidings.redelivery")

# Most messages re-sent to one connection for one conversation in one pass;
# a longer backlog is the client's sync's job (it pages).
MAX_PER_CONVERSATION = 200
# After a bus gap, at most this many messages per connection are pushed; a
# longer backlog is left to the client's sync (the server has told nothing
# wrong, only less, and clients resync on reconnect anyway).
MAX_REPAIR_PER_CONNECTION = 1000
# Connections repaired between yields to the event loop, so that a repair of
# thousands of connections does not stall live traffic.
REPAIR_BATCH = 50

# After this many unanswered redeliveries of the same range, stop: the client
# is not acknowledging at all (a bot that never sends delivered) and would
# otherwise get the same messages forever.
MAX_ATTEMPTS = 3


class Redeliverer:
    def __init__(
        self,
        service: ChatService,
        metrics: Metrics,
        redelivery_s: float,
        tracer: Tracer,
        network: NetworkMetrics,
    ) -> None:
        self._service = service
        self._metrics = metrics
        self._after = redelivery_s
        self._tracer = tracer
        self._network = network

    async def run_once(self, connections: Iterable[Connection], now: float) -> int:
        """Re-send overdue ranges; returns how many messages were re-sent."""
        resent = 0
        for conn in list(connections):
            if conn.unacked is None or conn.state is not State.OPEN:
                continue
            for cid, entry in list(conn.unacked.items()):
                if now - entry.sent_at < self._after:
                    continue
                if entry.attempts >= MAX_ATTEMPTS:
                    conn.acknowledged(cid, entry.high)  # give up; sync repairs
                    log.info(
                        "redelivery abandoned",
                        extra={
                            "session_id": conn.session_id,
                            "conversation_id": cid,
                            "low": entry.low,
                            "high": entry.high,
                        },
                    )
                    continue
                entry.attempts += 1
                entry.sent_at = now
                messages = await self._service.resend(
                    cid, entry.low - 1, entry.high + 1, MAX_PER_CONVERSATION
                )
                written = 0
                for message in messages:
                    if conn.write_frame(text_frame(msg_frame(message))):
                        written += 1
                        self._trace(conn, message.conversation_id, message.seq, entry.attempts)
                self._network.redelivered[conn.network].inc(written)
                resent += written
        if resent:
            self._metrics.frame_out("msg", resent)
            self._metrics.redelivered.inc(resent)
        return resent

    def _trace(self, conn: Connection, conversation_id: str, seq: int, attempt: int) -> None:
        tracer = self._tracer
        device = conn.device
        if device is not None and tracer.sampled(conversation_id, seq):
            tracer.redelivered(
                conversation_id, seq, device.user_id, device.device_id, conn.network, attempt
            )

    async def repair(self, connections: Iterable[Connection]) -> int:
        """After a bus gap: send each connection what the store has beyond what
        it was given (its device's delivered cursor, or the highest live seq
        it was sent), without the client having to reconnect."""
        resent = 0
        for index, conn in enumerate(list(connections)):
            if index and index % REPAIR_BATCH == 0:
                await asyncio.sleep(0)
            device = conn.device
            if device is None or conn.state is not State.OPEN:
                continue
            states = await self._service.list_conversations(device)
            budget = MAX_REPAIR_PER_CONNECTION
            for state in states:
                held = state.delivered_seq
                entry = conn.unacked.get(state.conversation_id) if conn.unacked else None
                if entry is not None:
                    held = max(held, entry.high)
                if held >= state.last_seq or budget <= 0:
                    continue
                messages = await self._service.resend(state.conversation_id, held, None, budget)
                now = time.monotonic()
                for message in messages:
                    # The sender's own messages were answered with acks; its
                    # other devices catch up by redelivery or sync instead.
                    if message.sender_id == device.user_id:
                        continue
                    if conn.write_frame(text_frame(msg_frame(message))):
                        conn.track(message.conversation_id, message.seq, now)
                        resent += 1
                budget -= len(messages)
        if resent:
            self._metrics.frame_out("msg", resent)
            self._metrics.repaired.inc(resent)
        log.info("connections repaired after a bus gap", extra={"messages": resent})
        return resent
