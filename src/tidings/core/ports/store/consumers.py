"""Change-log consumers: each named consumer's saved position and the lease
that makes one node at a time its active reader (``tidings.changelog``)."""

from __future__ import annotations

from typing import Protocol


class ConsumerStore(Protocol):
    async def consumer_position(self, name: str) -> int:
        """Where the consumer ``name`` resumes (0 for one never saved)."""
        ...

    async def take_consumer_lease(self, name: str, holder: str, lease_ms: int) -> bool:
        """Make ``holder`` the one active consumer ``name`` for ``lease_ms`` from
        now (by the database's clock): True if it already was or the previous
        holder's lease has expired (or was released), else False."""
        ...

    async def save_consumer_position(
        self, name: str, position: int, holder: str, lease_ms: int
    ) -> bool:
        """Save the consumer's position (never moving it back) and renew the
        lease, if ``holder`` still holds it; False (nothing saved) if another
        holder has taken it over, so that a stalled consumer learns it is out."""
        ...

    async def release_consumer_lease(self, name: str, holder: str) -> None:
        """End ``holder``'s lease now (a stopping node), so another takes over at once."""
        ...
