"""The bus protocol: best-effort, ordered pub/sub between nodes.

The bus is only the fast path of delivery. Anything it loses (a partition, a
restart) is repaired from the store by ``sync``, so a backend need not persist
anything. Every backend passes ``tests/bus/test_conformance.py``. Contract:

- ``publish`` reaches every subscriber of the topic that subscribed before the
  publish began, in publish order per publisher.
- ``subscribe`` / ``unsubscribe`` are reference-counted by the caller (the
  gateway); the bus sees each topic at most once per node.
- Payloads are opaque bytes; the handler given to ``start`` is called with
  (topic, payload) on the event loop and must not block.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

Handler = Callable[[str, bytes], None]
GapHandler = Callable[[], None]
"""Called after the bus lost its connection and got it back: messages published
meanwhile may be missing, and the node repairs its connections from the store."""


class Bus(Protocol):
    async def start(self, handler: Handler, on_gap: GapHandler | None = None) -> None:
        """Connect; every message on a subscribed topic is passed to ``handler``;
        ``on_gap`` is called whenever delivery may have had a gap (a reconnect)."""

    async def close(self) -> None:
        """Disconnect and drop every subscription."""

    async def publish(self, topic: str, payload: bytes) -> None:
        """Send ``payload`` to every node subscribed to ``topic``."""

    async def subscribe(self, topic: str) -> None:
        """Start receiving ``topic`` (idempotent)."""

    async def unsubscribe(self, topic: str) -> None:
        """Stop receiving ``topic`` (idempotent)."""

    async def ping(self) -> None:
        """Return if the bus is reachable, else raise ``UNAVAILABLE`` (readiness)."""
