"""Who is using a PostgreSQL store: the SQLite store's lock file, as an advisory lock.

Every process that opens the store holds ``pg_advisory_lock_shared`` on
:data:`USERS_LOCK` on a connection of its own, outside the pool (the pool's
error cleanup runs ``pg_advisory_unlock_all``, which would drop it), for as
long as the store is open; ``tidings restore`` asks for it exclusively, so
it is refused while a node runs (a node that kept running would go on
announcing the epoch from before the restore). PostgreSQL releases the lock
when the holding session ends, so a crashed node leaves nothing behind.
"""

from __future__ import annotations

from typing import Any

import asyncpg  # type: ignore[import-untyped]

from tidings.core.errors import ErrorCode, TidingsError
from tidings.store.postgres_errors import translate

USERS_LOCK = (29801, 2)
"""Advisory lock key; ``(29801, 0)`` and ``(29801, 1)`` are the migration lock
and the version gate (``postgres.py``)."""


async def _connect(url: str, timeout_s: float) -> Any:
    try:
        return await asyncpg.connect(url, timeout=timeout_s)
    except Exception as exc:
        raise translate(exc) from exc


async def hold_shared(url: str, timeout_s: float) -> Any:
    """A connection holding the lock shared; ``UNAVAILABLE`` while a restore holds it."""
    conn = await _connect(url, timeout_s)
    try:
        held = await conn.fetchval("SELECT pg_try_advisory_lock_shared($1, $2)", *USERS_LOCK)
    except Exception as exc:
        await conn.close()
        raise translate(exc) from exc
    if not held:
        await conn.close()
        raise TidingsError(
            ErrorCode.UNAVAILABLE,
            "the store is being restored (`tidings restore`)",
            retry_after_ms=1000,
        )
    return conn


async def nobody_else(url: str, timeout_s: float) -> bool:
    """True if no other process has the store open (the lock could be taken alone)."""
    conn = await _connect(url, timeout_s)
    try:
        return bool(await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", *USERS_LOCK))
    finally:
        await conn.close()  # ends the session, and with it the lock
