"""Publishing bus events that survive a bus outage.

The bus is the fast path only: if a publish fails, what it announced is
already durable, so the caller's request still succeeds and the event waits
here to be published again when the bus is back (other nodes' clients would
otherwise learn of it only at their next sync). Every service that announces
something (the chat service, the account service) publishes through the one
publisher of its process, so held events keep their order across services.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque

from tidings.core.events import BusEvent, encode_event
from tidings.core.ports.bus import Bus

log = logging.getLogger("tidings.messages")

# Events held while the bus is unreachable, at most: beyond that the oldest are
# dropped (their messages are durable; recipients get them by sync).
MAX_UNPUBLISHED = 10_000
# Held events are retried this often, doubling up to the maximum, until sent.
REPUBLISH_RETRY_S = 0.2
REPUBLISH_RETRY_MAX_S = 5.0


class Publisher:
    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self._unpublished: deque[tuple[str, bytes]] = deque()
        self._drainer: asyncio.Task[None] | None = None
        self._dropped_unpublished = 0

    @property
    def held(self) -> int:
        """Events not yet published (an admin command reports them before it exits)."""
        return len(self._unpublished)

    async def publish(self, topic: str, event: BusEvent) -> bool:
        """Publish, or hold the event to publish later; True if it went out now."""
        payload = encode_event(event)
        if self._unpublished:
            self._hold(topic, payload)  # keep order behind earlier failures
            return False
        try:
            await self._bus.publish(topic, payload)
        except Exception as exc:
            log.warning(
                "bus publish failed; holding the event", extra={"topic": topic, "error": str(exc)}
            )
            self._hold(topic, payload)
            return False
        return True

    def _hold(self, topic: str, payload: bytes) -> None:
        if len(self._unpublished) >= MAX_UNPUBLISHED:
            self._unpublished.popleft()
            self._dropped_unpublished += 1
        self._unpublished.append((topic, payload))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.get_running_loop().create_task(self._drain_held())

    async def _drain_held(self) -> None:
        """Keep trying to publish the held events until none is left: the bus's
        reconnect triggers ``republish`` at once, but its publishing side may
        come back a moment later, and nothing may stay held behind that."""
        delay = REPUBLISH_RETRY_S
        while self._unpublished:
            await asyncio.sleep(delay)
            await self.republish()
            delay = min(delay * 2, REPUBLISH_RETRY_MAX_S)

    async def close(self) -> None:
        """Stop retrying held events (they are durable; clients repair by sync)."""
        if self._drainer is not None:
            self._drainer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drainer

    async def republish(self) -> int:
        """Publish, in order, the events held while the bus was unreachable."""
        published = 0
        while self._unpublished:
            topic, payload = self._unpublished[0]
            try:
                await self._bus.publish(topic, payload)
            except Exception:
                log.warning("bus still unreachable", extra={"held": len(self._unpublished)})
                break
            self._unpublished.popleft()
            published += 1
        if self._dropped_unpublished:
            log.warning(
                "events dropped while the bus was down; clients repair them by sync",
                extra={"dropped": self._dropped_unpublished},
            )
            self._dropped_unpublished = 0
        return published
