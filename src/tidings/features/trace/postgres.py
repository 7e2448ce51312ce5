"""The trace feature's PostgreSQL backend, on the store's pool
(``FeatureContext.database``): a batch is one ``COPY``, the cheapest way in
for rows nobody updates."""

from __future__ import annotations

from collections.abc import Sequence

from tidings.core.ports.store.engine import PostgresAccess
from tidings.core.trace import Row
from tidings.features.trace import sql
from tidings.features.trace.port import DeliveryCount, TraceRow

_ROWS = sql.ROWS.format(cid="$1", seq="$2::bigint", limit="$3")
_LOCATE = sql.LOCATE.format(id="$1")
_PURGE = sql.PURGE.format(before="$1::bigint")
_DELIVERY = sql.DELIVERY.format(
    since="$1::bigint",
    until="$2::bigint",
    within="$3::bigint",
    device="j->>1",
    network="j->>2",
    expand="CROSS JOIN LATERAL jsonb_array_elements(d.devices::jsonb) j",
)
_COLUMNS = [name.strip() for name in sql.COLUMNS.split(",")]


class PostgresTraceStore:
    def __init__(self, database: PostgresAccess) -> None:
        self._db = database

    async def write(self, rows: Sequence[Row]) -> None:
        async with self._db.connection() as conn:
            await conn.copy_records_to_table("trace_events", records=rows, columns=_COLUMNS)

    async def rows(self, conversation_id: str, seq: int, limit: int) -> list[TraceRow]:
        async with self._db.connection() as conn:
            found = await conn.fetch(_ROWS, conversation_id, seq, limit)
        return [TraceRow(*row) for row in found]

    async def locate(self, identifier: str) -> list[tuple[str, int]]:
        async with self._db.connection() as conn:
            found = await conn.fetch(_LOCATE, identifier)
        return [(row[0], row[1]) for row in found]

    async def purge(self, before_us: int) -> int:
        async with self._db.connection() as conn:
            status = await conn.execute(_PURGE, before_us)
        return int(status.split()[-1])

    async def delivery(self, since_us: int, until_us: int, within_us: int) -> list[DeliveryCount]:
        async with self._db.connection() as conn:
            found = await conn.fetch(_DELIVERY, since_us, until_us, within_us)
        return [DeliveryCount(row[0], row[1], row[2]) for row in found]
