"""Which index generation is live, keeping it current, and rebuilding it.

The keeper is the one place that decides whether search can answer from the
index. At start it checks the live generation: missing, damaged (the
engine's check), behind the change log (its position below the indexer's
saved one, say after an older copy of the files was put back) or ahead of
the store (the store was restored from a backup); any of these starts a
rebuild in the background, during which search
answers from the store's slower path and says ``degraded``. Damage found
later (a query or a write failing as corrupt, or the periodic check) does
the same.

A rebuild fills a new generation beside the live one from the change
stream, in pages, then, holding the lock the indexer takes for each batch,
catches it up to the head and promotes it: the swap loses nothing the
indexer handled meanwhile. ``tidings search reindex`` runs the same
:meth:`Keeper.rebuild` in its own process; a server notices the new live
generation at its next batch and catches it up from the generation's own
position before applying anything more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Protocol

from tidings.core.content_kinds import ContentKinds
from tidings.core.errors import TidingsError
from tidings.core.ids import now_ms
from tidings.core.models import Change, ChangeBatch
from tidings.core.ports.store.consumers import ConsumerStore
from tidings.core.ports.store.messages import MessageLog
from tidings.features.search.metrics import SearchMetrics
from tidings.features.search.port import Generation, GenerationGone, IndexCorrupt, SearchIndex
from tidings.features.search.settings import SearchSettings
from tidings.features.search.workers import WORKER_NAME, ops_of

log = logging.getLogger("tidings.search")

Progress = Callable[[int, int], None]
"""Called as a rebuild goes: (position reached, head of the stream)."""
RETRY_S = 5.0
"""Wait before a rebuild that failed (the store unreachable) is tried again."""


class KeeperStore(MessageLog, ConsumerStore, Protocol):
    """What the keeper reads of the store: the change stream and the indexer's position."""


class Keeper:
    def __init__(
        self,
        index: SearchIndex,
        store: KeeperStore,
        kinds: ContentKinds,
        settings: SearchSettings,
        metrics: SearchMetrics,
    ) -> None:
        self.index = index
        self._store = store
        self._kinds = kinds
        self._settings = settings
        self._metrics = metrics
        self._lock = asyncio.Lock()
        self._seen: str | None = None
        """The generation this process has caught up (it applies batches to it)."""
        self._rebuilding: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None

    # -- lifecycle --------------------------------------------------------------

    async def start(self) -> None:
        await self.index.start()
        live: Generation | None = None
        try:
            live = await self.index.live()
            if live is not None:
                await self.index.check(live)
        except (IndexCorrupt, GenerationGone) as exc:
            log.warning("search index is damaged or gone; rebuilding: %s", exc)
            live = None
        if live is None:
            await self._rebuild_at_start("no usable index", None)
        elif live.position < await self._store.consumer_position(WORKER_NAME):
            await self._rebuild_at_start("index behind the change log", live)
        elif live.position > (await self._store.changes_after(0, 1)).head:
            # The store went back in time (a restore): the index holds messages
            # it no longer has.
            await self._rebuild_at_start("index ahead of the store", None)
        else:
            self._seen = live.name
        self._sweeper = asyncio.create_task(self._sweep())

    async def _rebuild_at_start(self, reason: str, base: Generation | None) -> None:
        """Rebuild now if what is missing fits in one page (a new or small
        store: the node never answers degraded for it), else in the background."""
        position = 0 if base is None else base.position
        page = await self._store.changes_after(position, self._settings.rebuild_batch)
        if len(page.changes) >= self._settings.rebuild_batch:
            self._start_rebuild(reason, base)
            return
        self._metrics.rebuilds.inc()
        log.info("rebuilding the search index: %s", reason)
        await self.rebuild(base=base)

    async def stop(self) -> None:
        for task in (self._rebuilding, self._sweeper):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.index.close()

    # -- state ------------------------------------------------------------------

    @property
    def degraded(self) -> bool:
        """Whether search must answer from the store (a rebuild is running)."""
        return self._rebuilding is not None and not self._rebuilding.done()

    async def current(self) -> Generation | None:
        """The generation queries may use, or None (then answer from the store)."""
        if self.degraded:
            return None
        try:
            live = await self.index.live()
        except IndexCorrupt as exc:
            self.damaged(exc)
            return None
        if live is None:
            self.damaged(IndexCorrupt("the live index is gone"))
        return live

    def damaged(self, exc: Exception) -> None:
        """The index failed as corrupt: rebuild it (once; queries go to the store)."""
        if not self.degraded:
            log.warning("search index is damaged; rebuilding: %s", exc)
            self._start_rebuild(str(exc))

    # -- following the change log -----------------------------------------------

    def _oldest_ts(self) -> int:
        days = self._settings.index_days
        return now_ms() - days * 86_400_000 if days else 0

    async def _apply(
        self, generation: Generation, changes: list[Change], position: int
    ) -> Generation:
        if position <= generation.position:
            return generation  # applied already (a replayed batch)
        ahead = [c for c in changes if c.position > generation.position]
        return await self.index.apply(
            generation, ops_of(ahead, self._kinds, self._oldest_ts()), position
        )

    async def follow(self, batch: ChangeBatch) -> None:
        """Apply one batch of the change log to the live generation."""
        async with self._lock:
            if self.degraded:
                return  # the rebuild catches up past this batch before it promotes
            try:
                live = await self.index.live()
                if live is None:
                    raise IndexCorrupt("the live index is gone")
                if live.name != self._seen:
                    live = await self._catch_up(live)
                    self._seen = live.name
                await self._apply(live, batch.changes, batch.next_position)
            except GenerationGone:
                return  # promoted away meanwhile: the next batch catches the new one up
            except IndexCorrupt as exc:
                self.damaged(exc)

    async def _catch_up(
        self, generation: Generation, progress: Progress | None = None
    ) -> Generation:
        """Apply the change stream from ``generation``'s position to its head."""
        size = self._settings.rebuild_batch
        while True:
            batch = await self._store.changes_after(generation.position, size)
            generation = await self._apply(generation, batch.changes, batch.next_position)
            if progress is not None:
                progress(generation.position, batch.head)
            if len(batch.changes) < size:
                return generation

    # -- rebuilding -------------------------------------------------------------

    async def rebuild(
        self, progress: Progress | None = None, base: Generation | None = None
    ) -> Generation:
        """Fill a new generation (or catch up ``base``) from the store, then promote it."""
        generation = base if base is not None else await self.index.create()
        try:
            generation = await self._catch_up(generation, progress)
            async with self._lock:
                generation = await self._catch_up(generation, progress)
                await self.index.promote(generation)
                self._seen = generation.name
        except BaseException:
            if base is None:
                with contextlib.suppress(Exception):
                    await self.index.discard(generation)
            raise
        return generation

    def _start_rebuild(self, reason: str, base: Generation | None = None) -> None:
        self._metrics.rebuilds.inc()
        self._rebuilding = asyncio.create_task(self._rebuild_until_done(reason, base))

    async def _rebuild_until_done(self, reason: str, base: Generation | None) -> None:
        self._metrics.degraded.value = 1
        try:
            while True:
                log.info("rebuilding the search index: %s", reason)
                try:
                    generation = await self.rebuild(base=base)
                except (TidingsError, IndexCorrupt, GenerationGone, OSError) as exc:
                    log.warning("search index rebuild failed; retrying: %s", exc)
                    base = None
                    await asyncio.sleep(RETRY_S)
                    continue
                log.info("search index rebuilt up to position %d", generation.position)
                return
        finally:
            self._metrics.degraded.value = 0

    async def _sweep(self) -> None:
        """Every ``sweep_s``: check the live generation, and drop what expired
        (older than the window, or purged by retention)."""
        while True:
            await asyncio.sleep(self._settings.sweep_s)
            if self.degraded:
                continue
            try:
                live = await self.index.live()
                if live is None:
                    raise IndexCorrupt("the live index is gone")
                await self.index.check(live)
                await self.index.expire(live, self._oldest_ts())
            except IndexCorrupt as exc:
                self.damaged(exc)
            except (GenerationGone, TidingsError, OSError) as exc:
                log.warning("search index sweep failed; retrying at the next: %s", exc)
