"""The in-process bus: the default for a single node, and a complete reference
backend (not a mock) that passes the same conformance suite as Redis.

Several :class:`MemoryBus` instances created from one :class:`MemoryHub` behave
like several nodes on one broker, which lets tests run multi-node scenarios in
one process.
"""

from __future__ import annotations

from tidings.core.ports.bus import GapHandler, Handler


class MemoryHub:
    """The shared 'broker' of in-process buses."""

    def __init__(self) -> None:
        self._subscribers: dict[str, set[MemoryBus]] = {}

    def publish(self, topic: str, payload: bytes) -> None:
        for bus in tuple(self._subscribers.get(topic, ())):
            bus.deliver(topic, payload)

    def subscribe(self, topic: str, bus: MemoryBus) -> None:
        self._subscribers.setdefault(topic, set()).add(bus)

    def unsubscribe(self, topic: str, bus: MemoryBus) -> None:
        subs = self._subscribers.get(topic)
        if subs is not None:
            subs.discard(bus)
            if not subs:
                del self._subscribers[topic]


class MemoryBus:
    """A bus whose messages stay in this process; handlers run synchronously."""

    def __init__(self, hub: MemoryHub | None = None) -> None:
        self._hub = hub if hub is not None else MemoryHub()
        self._handler: Handler | None = None
        self._topics: set[str] = set()

    async def start(self, handler: Handler, on_gap: GapHandler | None = None) -> None:
        # An in-process hub never loses a message: there is no gap to report.
        self._handler = handler

    async def close(self) -> None:
        for topic in tuple(self._topics):
            self._hub.unsubscribe(topic, self)
        self._topics.clear()
        self._handler = None

    async def publish(self, topic: str, payload: bytes) -> None:
        self._hub.publish(topic, payload)

    async def subscribe(self, topic: str) -> None:
        if topic not in self._topics:
            self._topics.add(topic)
            self._hub.subscribe(topic, self)

    async def unsubscribe(self, topic: str) -> None:
        if topic in self._topics:
            self._topics.discard(topic)
            self._hub.unsubscribe(topic, self)

    async def ping(self) -> None:
        return None

    def deliver(self, topic: str, payload: bytes) -> None:
        """Called by the hub: hand one message to this node's handler."""
        if self._handler is not None:
            self._handler(topic, payload)
