"""The store's lifecycle: what the composition root does with it, never a service."""

from __future__ import annotations

from typing import Protocol


class StoreLifecycle(Protocol):
    async def start(self) -> None:
        """Open connections and apply migrations (idempotent)."""

    async def close(self) -> None:
        """Flush pending writes and release connections."""

    async def ping(self) -> None:
        """Return if the database answers, else raise ``UNAVAILABLE`` (readiness)."""
