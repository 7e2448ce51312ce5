"""One node's claim to be the active consumer of a worker's changes.

Every node that registers a worker runs a runner for it, so that another can
take over when the active one dies; the lease row in the store
(``Store.take_consumer_lease``) makes only one of them active at a time. The
holder renews it with every saved position, and at least every third of its
duration while idle; a node that stops releases it, one that dies lets it
expire. The database's clock (or, on SQLite, the one machine's) decides
expiry, so nodes' clocks need not agree.
"""

from __future__ import annotations

import asyncio
import logging
import time

from tidings.core.errors import TidingsError
from tidings.core.ports.store.consumers import ConsumerStore

log = logging.getLogger(__name__)

RELEASE_TIMEOUT_S = 5.0
"""A stopping node waits this long to release its lease; failing that, the
lease simply expires and another node takes over a little later."""


class Lease:
    """``holder``'s lease on the consumer ``name``, as last seen by this process."""

    def __init__(self, store: ConsumerStore, name: str, holder: str, lease_ms: int) -> None:
        self._store = store
        self._name = name
        self._holder = holder
        self._lease_ms = lease_ms
        self._renewed_at: float | None = None  # time.monotonic() of the last renewal

    @property
    def held(self) -> bool:
        return self._renewed_at is not None

    async def take(self) -> bool:
        """Take the lease, or renew it if already ours; False if another holds it."""
        return self._renewed(
            await self._store.take_consumer_lease(self._name, self._holder, self._lease_ms)
        )

    async def save(self, position: int) -> bool:
        """Save the consumer's position and renew the lease; False if another
        holder has taken it over meanwhile (nothing saved)."""
        return self._renewed(
            await self._store.save_consumer_position(
                self._name, position, self._holder, self._lease_ms
            )
        )

    def renewal_due(self) -> bool:
        """Whether a third of the lease has passed since it was last renewed:
        renewing then leaves two thirds for a slow store call to get through."""
        renewed = self._renewed_at
        return renewed is None or time.monotonic() - renewed >= self._lease_ms / 3000

    async def release(self) -> None:
        """Give the lease up at once (best effort: else it expires)."""
        if self._renewed_at is None:
            return
        self._renewed_at = None
        try:
            async with asyncio.timeout(RELEASE_TIMEOUT_S):
                await self._store.release_consumer_lease(self._name, self._holder)
        except (TidingsError, TimeoutError) as exc:
            log.warning(
                "could not release a change-log lease; it will expire",
                extra={"worker": self._name, "error": str(exc)},
            )

    def _renewed(self, held: bool) -> bool:
        self._renewed_at = time.monotonic() if held else None
        return held
