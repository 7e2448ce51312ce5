"""Taking deleted text out of the SQLite files, not just out of the tables.

``secure_delete`` zeroes what a delete frees, but in WAL mode the pages that
held the text (as first written, and as the delete's own before-images) are
still in ``tidings.db-wal`` until a checkpoint copies the scrubbed pages
into the database file and the log is truncated. :class:`WalScrubber` runs
``PRAGMA wal_checkpoint(TRUNCATE)`` on a connection of its own after every
delete for everyone and retention purge: the caller's answer waits for it,
so a client that got the ``ack`` of a delete can rely on the text being gone
from the files. A checkpoint must wait for readers of older snapshots; when
it cannot finish within its attempts it is retried in the background and
logged, never silently dropped.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3

log = logging.getLogger("tidings.store.sqlite")

ATTEMPTS = 5
"""Checkpoints tried before the caller is answered; each waits up to the
connection's busy timeout for the writer and old readers to let go."""

BACKGROUND_ATTEMPTS = 60
"""Further tries, one per :data:`BACKGROUND_PAUSE_S`, before giving up with an error log."""

BACKGROUND_PAUSE_S = 1.0


class WalScrubber:
    """Truncating checkpoints of one database, one at a time."""

    def __init__(self, path: str, busy_timeout_ms: int) -> None:
        self._path = path
        self._busy_timeout_ms = busy_timeout_ms
        self._lock = asyncio.Lock()
        self._retry: asyncio.Task[None] | None = None

    def _checkpoint(self) -> bool:
        conn = sqlite3.connect(self._path, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
            (busy, _, _) = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            return int(busy) == 0
        finally:
            conn.close()

    async def scrub(self) -> bool:
        """Checkpoint and truncate the WAL; False (and a background retry) if
        readers kept it from finishing."""
        async with self._lock:
            for attempt in range(ATTEMPTS):
                if await asyncio.to_thread(self._checkpoint):
                    return True
                await asyncio.sleep(0.05 * 2**attempt)
        if self._retry is None or self._retry.done():
            self._retry = asyncio.create_task(self._keep_trying())
        return False

    async def _keep_trying(self) -> None:
        for _ in range(BACKGROUND_ATTEMPTS):
            await asyncio.sleep(BACKGROUND_PAUSE_S)
            async with self._lock:
                if await asyncio.to_thread(self._checkpoint):
                    return
        log.error("could not truncate the WAL of %s: deleted text may stay in it", self._path)

    async def close(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            await asyncio.gather(self._retry, return_exceptions=True)
