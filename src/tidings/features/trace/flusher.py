"""The trace feature's background task: writes the tracer's buffer in
batches, purges events past the retention, and works out the delivery rate.

A batch is whatever the tracer gathered since the last write: one job on the
SQLite writer or one ``COPY`` on PostgreSQL per ``flush_ms``, however many
messages it covers, so tracing costs the store a write per period rather
than a write per message. A batch that fails to write is dropped (counted in
``tidings_trace_write_failures_total`` and its events in
``tidings_trace_events_dropped_total``): trace events are diagnostics, and
retrying would grow the buffer exactly when the store is in trouble. A node
that dies loses what it had not written yet, at most ``flush_ms`` of events.
"""

from __future__ import annotations

import asyncio
import logging
import time

from tidings.core.loop import stop_task
from tidings.core.trace import Tracer, micros
from tidings.features.trace.metrics import TraceMetrics
from tidings.features.trace.port import TraceStore
from tidings.features.trace.settings import TraceSettings

log = logging.getLogger("tidings.trace")


class Flusher:
    def __init__(
        self,
        tracer: Tracer,
        store: TraceStore,
        settings: TraceSettings,
        metrics: TraceMetrics,
    ) -> None:
        self._tracer = tracer
        self._store = store
        self._settings = settings
        self._metrics = metrics
        self._task: asyncio.Task[None] | None = None
        self._lost = 0

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="trace-flusher")

    async def stop(self) -> None:
        await stop_task(self._task)
        self._task = None
        await self.flush()

    async def flush(self) -> int:
        """Write what the tracer holds; how many events were written."""
        events = self._tracer.take()
        metrics = self._metrics
        if events:
            try:
                await self._store.write(events)
            except Exception:
                log.exception("trace events could not be written", extra={"lost": len(events)})
                metrics.write_failures.inc()
                self._lost += len(events)
                events = []
            metrics.written.inc(len(events))
        metrics.dropped.value = self._tracer.dropped + self._lost
        return len(events)

    async def upkeep(self, now: float) -> None:
        """Purge events past the retention; update the delivery rate."""
        settings = self._settings
        purged = await self._store.purge(micros(now - settings.retention_s))
        self._metrics.purged.inc(purged)
        within = settings.delivery_window_s
        until = now - within
        counts = await self._store.delivery(
            micros(until - settings.purge_interval_s), micros(until), micros(within)
        )
        self._metrics.delivery(counts)

    async def _run(self) -> None:
        settings = self._settings
        next_upkeep = time.time() + settings.purge_interval_s
        while True:
            await asyncio.sleep(settings.flush_ms / 1000)
            try:
                await self.flush()
                now = time.time()
                if now >= next_upkeep:
                    next_upkeep = now + settings.purge_interval_s
                    await self.upkeep(now)
            except Exception:
                log.exception("trace upkeep failed")
