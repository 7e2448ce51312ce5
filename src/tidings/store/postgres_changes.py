"""The consumers of the change stream on PostgreSQL: their positions and the
lease that makes one node at a time the active consumer of each
(docs/architecture.md, "The change log and its workers").

Lease times are the database's clock (``clock_timestamp()``), not the
nodes': a node whose clock runs ahead must not take over a lease early.
Each call is one statement.
"""

from __future__ import annotations

from typing import Any

_DB_NOW_MS = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint"

_TAKE_LEASE = (
    "INSERT INTO change_consumers AS cc (name, position, holder, lease_until)"
    f" VALUES ($1, 0, $2, {_DB_NOW_MS} + $3)"
    " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, lease_until = excluded.lease_until"
    f" WHERE cc.holder = excluded.holder OR cc.lease_until <= {_DB_NOW_MS}"
)
_SAVE_POSITION = (
    "UPDATE change_consumers"
    f" SET position = greatest(position, $2), lease_until = {_DB_NOW_MS} + $4"
    " WHERE name = $1 AND holder = $3"
)


async def consumer_position(conn: Any, name: str) -> int:
    position = await conn.fetchval("SELECT position FROM change_consumers WHERE name = $1", name)
    return 0 if position is None else int(position)


async def take_lease(conn: Any, name: str, holder: str, lease_ms: int) -> bool:
    return str(await conn.execute(_TAKE_LEASE, name, holder, lease_ms)) == "INSERT 0 1"


async def save_position(conn: Any, name: str, position: int, holder: str, lease_ms: int) -> bool:
    return str(await conn.execute(_SAVE_POSITION, name, position, holder, lease_ms)) == "UPDATE 1"


async def release_lease(conn: Any, name: str, holder: str) -> None:
    await conn.execute(
        "UPDATE change_consumers SET lease_until = 0 WHERE name = $1 AND holder = $2",
        name,
        holder,
    )
