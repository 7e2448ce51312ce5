"""The retention purge: every ``retention_sweep_s`` one node (the holder of
the ``retention`` lease, the change log's lease mechanism) removes expired
entries, a bounded batch per transaction, until none are left.

Time decides what expires, not the change stream, so the purge is a timer
rather than a change-log consumer; it shares the consumers' lease so that
one node of a cluster sweeps at a time, and another takes over when it dies.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import Protocol

from tidings.core.errors import TidingsError
from tidings.core.ids import now_ms
from tidings.core.loop import stop_task
from tidings.core.ports.store.consumers import ConsumerStore
from tidings.core.ports.store.retention import RetentionStore
from tidings.observability.metrics import Metrics

log = logging.getLogger("tidings.retention")

LEASE_NAME = "retention"
BATCH_ENTRIES = 1000
"""Entries removed per transaction: short enough that sends never wait long
behind a purge."""
MAX_BATCHES = 1000
"""Transactions per sweep at most; the next sweep goes on from there."""


class PurgeStore(RetentionStore, ConsumerStore, Protocol):
    """What the purge uses of the store."""


class RetentionPurge:
    def __init__(
        self, store: PurgeStore, metrics: Metrics, default_days: int, sweep_s: float
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._default_days = default_days
        self._sweep_s = sweep_s
        self._holder = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self._task: asyncio.Task[None] | None = None

    async def sweep(self) -> int:
        """Purge what has expired now, if this node holds the lease; entries removed."""
        lease_ms = int(max(self._sweep_s, 1.0) * 3000)
        if not await self._store.take_consumer_lease(LEASE_NAME, self._holder, lease_ms):
            return 0
        removed = 0
        for _ in range(MAX_BATCHES):
            result = await self._store.purge_expired(now_ms(), self._default_days, BATCH_ENTRIES)
            removed += result.entries
            if result.entries == 0:
                break
        if removed:
            self._metrics.retention_purged.inc(removed)
            log.info("retention purge", extra={"entries": removed})
        return removed

    async def _run(self) -> None:
        while True:
            try:
                await self.sweep()
            except TidingsError as exc:
                log.warning("retention purge failed; retrying at the next sweep: %s", exc)
            await asyncio.sleep(self._sweep_s)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is None:
            return
        await stop_task(self._task)
        await self._store.release_consumer_lease(LEASE_NAME, self._holder)
