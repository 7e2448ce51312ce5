"""Admin commands reaching a node whose bus is in-process (``memory://``).

An admin command runs in a process of its own: with a Redis bus it publishes
as any node does, but an in-process bus has no one to hear it there. So a
command's publisher writes its events to the store (:class:`AnnouncingBus`),
and the node relays what appears there onto its own bus
(:class:`AnnouncementRelay`), where its connections hear it as if published
locally: a disabled account's open sessions close, a new conversation's
connected members are subscribed. The store is the one thing both share.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from tidings.core.errors import TidingsError
from tidings.core.ids import now_ms
from tidings.core.loop import stop_task
from tidings.core.ports.bus import Bus, GapHandler, Handler
from tidings.core.ports.store.announcements import AnnouncementStore

log = logging.getLogger("tidings.bus.relay")

REREAD = 64
"""Ids re-read behind the relay's position: PostgreSQL ids may commit out of
order, and a late one still falls in the window (events are idempotent)."""
BATCH = 500
KEEP_MS = 3_600_000
"""Announcements older than this are pruned: a node that was down meanwhile
needs none of them (it starts from the store's state and the last id)."""


class AnnouncingBus:
    """The bus of an admin command over a node's in-process bus: publishing
    stores the event for the node to relay. Nothing is ever received."""

    def __init__(self, store: AnnouncementStore) -> None:
        self._store = store

    async def start(self, handler: Handler, on_gap: GapHandler | None = None) -> None:
        """Nothing to connect: the store is already open."""

    async def close(self) -> None:
        """Nothing to release."""

    async def publish(self, topic: str, payload: bytes) -> None:
        await self._store.announce(topic, payload, now_ms())

    async def subscribe(self, topic: str) -> None:
        """A command only publishes."""

    async def unsubscribe(self, topic: str) -> None:
        """A command only publishes."""

    async def ping(self) -> None:
        """Reachable whenever the store is."""


class AnnouncementRelay:
    """Publishes on ``bus`` what admin commands announced in ``store`` since
    the node started, polling every ``poll_ms``."""

    def __init__(self, store: AnnouncementStore, bus: Bus, poll_ms: int) -> None:
        self._store = store
        self._bus = bus
        self._poll_s = poll_ms / 1000
        self._position = 0
        self._floor = 0  # announcements before the node started are not its business
        self._relayed: deque[int] = deque(maxlen=REREAD * 4)
        self._task: asyncio.Task[None] | None = None

    async def relay(self) -> int:
        """Publish the announcements not relayed yet; how many."""
        published = 0
        after = max(self._floor, self._position - REREAD)
        while True:
            batch = await self._store.announcements_after(after, BATCH)
            for item in batch:
                if item.id in self._relayed:
                    continue
                await self._bus.publish(item.topic, item.payload)
                self._relayed.append(item.id)
                self._position = max(self._position, item.id)
                published += 1
            if len(batch) < BATCH:
                return published
            after = batch[-1].id

    async def _run(self) -> None:
        polls = 0
        while True:
            await asyncio.sleep(self._poll_s)
            try:
                await self.relay()
                polls += 1
                if polls % 600 == 0:
                    await self._store.prune_announcements(now_ms() - KEEP_MS)
            except TidingsError as exc:
                log.warning("relaying admin announcements failed; retrying: %s", exc)

    async def start(self) -> None:
        self._position = self._floor = await self._store.last_announcement()
        await self._store.prune_announcements(now_ms() - KEEP_MS)
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        await stop_task(self._task)
