"""Coalesced read receipts for large groups.

In a group of M members each cursor change pushed to every member would cost
O(M) frames, O(M²) for one message read by all. Above
``receipt_detail_max_members`` the node instead remembers which local users
sent recent messages, marks a conversation dirty when any cursor moves, and
once per interval sends each such sender one ``receipt_summary`` with the
counts for their latest message. The frames sent stay O(M) per message (the
cursor updates themselves) however many members read it.
"""

from __future__ import annotations

import asyncio
import logging
import time

from tidings.core.frames import ReceiptSummary, encode
from tidings.core.loop import stop_task
from tidings.core.service import ChatService
from tidings.gateway.registry import LocalRegistry
from tidings.gateway.wsframe import text_frame
from tidings.observability.metrics import Metrics

log = logging.getLogger("tidings.receipts")

# A sender stops getting summaries for a message this long after sending it,
# or as soon as every member has read it.
TRACK_SECONDS = 600.0
# At most this many recent senders are tracked per conversation (oldest dropped).
MAX_SENDERS_PER_CONVERSATION = 256


class ReceiptAggregator:
    def __init__(
        self, service: ChatService, registry: LocalRegistry, metrics: Metrics, interval_s: float
    ) -> None:
        self._service = service
        self._registry = registry
        self._metrics = metrics
        self._interval = interval_s
        # conversation -> sender -> (seq of their latest message, when sent)
        self._recent: dict[str, dict[str, tuple[int, float]]] = {}
        self._dirty: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    def sent(self, conversation_id: str, sender_id: str, seq: int) -> None:
        senders = self._recent.setdefault(conversation_id, {})
        senders.pop(sender_id, None)
        senders[sender_id] = (seq, time.monotonic())
        if len(senders) > MAX_SENDERS_PER_CONVERSATION:
            del senders[next(iter(senders))]

    def cursor_moved(self, conversation_id: str) -> None:
        if conversation_id in self._recent:
            self._dirty.add(conversation_id)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="receipt-aggregator")

    async def stop(self) -> None:
        await stop_task(self._task)
        self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.flush()
            except Exception:
                log.exception("receipt summary flush failed")

    async def flush(self) -> None:
        """Send one summary per tracked sender of every dirty conversation."""
        dirty, self._dirty = self._dirty, set()
        now = time.monotonic()
        for cid in dirty:
            senders = self._recent.get(cid)
            if not senders:
                continue
            for sender_id, (seq, since) in list(senders.items()):
                counts = await self._service.receipt_counts(cid, seq)
                frame = ReceiptSummary(
                    conversation_id=cid,
                    seq=seq,
                    delivered_count=counts.delivered_count,
                    read_count=counts.read_count,
                    members=counts.members,
                )
                sent = self._registry.write_to_user(sender_id, text_frame(encode(frame)))
                if sent:
                    self._metrics.frame_out("receipt_summary", sent)
                if counts.read_count >= counts.members or now - since > TRACK_SECONDS:
                    senders.pop(sender_id, None)
            if not senders:
                self._recent.pop(cid, None)
