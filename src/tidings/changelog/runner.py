"""Feeding one worker the change stream: read a batch, handle it, save the
position, at least once.

The position is saved only after ``handle`` returned, so a batch cut short
(an exception, the task cancelled, the process killed) is read again from
the saved position: nothing is lost, some changes are handled twice. The
runner lives in a task of its own and touches the send path nowhere: a slow
or failing worker only falls behind (``tidings_changelog_lag_seconds``).
Failures are logged and retried after a backoff that doubles up to a cap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Protocol

from tidings.changelog.lease import Lease
from tidings.core.models import ChangeBatch
from tidings.core.ports.store.consumers import ConsumerStore
from tidings.core.ports.store.messages import MessageLog
from tidings.core.workers import ChangeWorker
from tidings.observability.metrics import Metrics
from tidings.settings import Settings

log = logging.getLogger(__name__)


class ChangeSource(MessageLog, ConsumerStore, Protocol):
    """What a runner reads from: the change stream, and the consumer positions
    and leases that say where its worker resumes and which node runs it."""


@dataclass(frozen=True, slots=True)
class RunnerOptions:
    """How runners read, wait and retry (from the ``changelog_*`` settings)."""

    batch_size: int = 100
    """Most changes handed to a worker at once."""
    catchup_batch_size: int = 1000
    """Most changes handed at once to a worker that is behind (its previous
    batch was full). Each read costs PostgreSQL a low-water-mark computation
    that holds new appends for its duration, so a worker keeping up with heavy
    traffic reads seldom and much rather than often and little."""
    poll_s: float = 1.0
    """How long a caught-up runner waits before reading again."""
    lease_ms: int = 15_000
    """How long a lease lasts unless renewed: a dead node's worker resumes on
    another node after at most this (plus one standby poll)."""
    retry_max_s: float = 30.0
    """The longest wait after failures (the backoff starts at ``poll_s``)."""

    @classmethod
    def from_settings(cls, settings: Settings) -> RunnerOptions:
        return cls(
            settings.changelog_batch_size,
            max(settings.changelog_batch_size, settings.changelog_catchup_batch_size),
            settings.changelog_poll_ms / 1000,
            settings.changelog_lease_ms,
            settings.changelog_retry_max_ms / 1000,
        )

    @property
    def standby_s(self) -> float:
        """How often a runner without the lease tries to take it: often enough
        to take over soon after it expires, seldom enough to cost nothing."""
        return min(self.poll_s, self.lease_ms / 3000)

    def backoff_s(self, failures: int) -> float:
        """The wait after ``failures`` failures in a row."""
        return float(min(self.retry_max_s, self.poll_s * 2 ** min(failures - 1, 30)))


class ChangeRunner:
    """Runs one worker on this node: standby until it holds the worker's
    lease, then follows the change stream from the saved position."""

    def __init__(
        self,
        store: ChangeSource,
        worker: ChangeWorker,
        metrics: Metrics,
        options: RunnerOptions,
        holder: str,
    ) -> None:
        self._store = store
        self._worker = worker
        self._name = worker.name
        self._options = options
        self._lease = Lease(store, self._name, holder, options.lease_ms)
        self._lag = metrics.changelog_lag.labels(self._name)
        self._behind = metrics.changelog_behind.labels(self._name)
        self._handled = metrics.changelog_handled.labels(self._name)
        self._failures = metrics.changelog_failures.labels(self._name)
        self._task: asyncio.Task[None] | None = None

    @property
    def active(self) -> bool:
        """Whether this runner holds the worker's lease (as last renewed)."""
        return self._lease.held

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"changelog:{self._name}"
            )

    async def stop(self) -> None:
        """Cancel the task (a batch in hand is handed over again later, by
        whichever node resumes) and release the lease so another node need
        not wait for it to expire."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await self._lease.release()
        self._standby()

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                if await self._lease.take():
                    await self._follow()
                else:
                    self._standby()
                    await asyncio.sleep(self._options.standby_s)
                failures = 0
            except Exception:
                failures += 1
                self._failures.inc()
                delay = self._options.backoff_s(failures)
                log.exception(
                    "change-log worker failed; retrying from its saved position",
                    extra={"worker": self._name, "failures": failures, "retry_in_s": delay},
                )
                await asyncio.sleep(delay)

    async def _follow(self) -> None:
        """Handle batches from the saved position while the lease is ours;
        return when another holder has taken it over."""
        position = await self._store.consumer_position(self._name)
        limit = self._options.batch_size
        while True:
            batch = await self._store.changes_after(position, limit)
            full = len(batch.changes) >= limit
            limit = self._options.catchup_batch_size if full else self._options.batch_size
            self._waiting(batch)
            if batch.changes:
                await self._worker.handle(batch)
                self._handled.inc(len(batch.changes))
            if batch.next_position > position or self._lease.renewal_due():
                if not await self._lease.save(batch.next_position):
                    log.warning("change-log lease taken over", extra={"worker": self._name})
                    self._standby()
                    return
                position = batch.next_position
            self._behind.value = max(0, batch.head - position)
            if position >= batch.head:
                self._lag.waiting_since_ms = None
                await asyncio.sleep(self._options.poll_s)

    def _waiting(self, batch: ChangeBatch) -> None:
        """The lag clock starts at the oldest change not yet handled."""
        if batch.changes:
            self._lag.waiting_since_ms = batch.changes[0].message.ts

    def _standby(self) -> None:
        """Another node (or none) is active: lag is that node's to report."""
        self._lag.waiting_since_ms = None
        self._behind.value = 0
