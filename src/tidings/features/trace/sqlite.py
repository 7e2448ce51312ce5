"""The trace feature's SQLite backend: a batch is one job on the store's
writer (one ``executemany`` inside its group transaction), reads go to a
reader connection (``FeatureContext.database``)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from tidings.core.ports.store.engine import SqliteAccess
from tidings.core.trace import Row
from tidings.features.trace import sql
from tidings.features.trace.port import DeliveryCount, TraceRow

_INSERT = f"INSERT INTO trace_events ({sql.COLUMNS}) VALUES ({', '.join('?' * sql.WIDTH)})"
_ROWS = sql.ROWS.format(cid=":cid", seq=":seq", limit=":limit")
_LOCATE = sql.LOCATE.format(id=":id")
_PURGE = sql.PURGE.format(before=":before")
_DELIVERY = sql.DELIVERY.format(
    within=":within",
    since=":since",
    until=":until",
    device="json_extract(j.value, '$[1]')",
    network="json_extract(j.value, '$[2]')",
    expand=", json_each(d.devices) j",
)


class SqliteTraceStore:
    def __init__(self, database: SqliteAccess) -> None:
        self._db = database

    async def write(self, rows: Sequence[Row]) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.executemany(_INSERT, rows)

        await self._db.write("trace_write", op)

    async def rows(self, conversation_id: str, seq: int, limit: int) -> list[TraceRow]:
        params = {"cid": conversation_id, "seq": seq, "limit": limit}

        def op(conn: sqlite3.Connection) -> list[TraceRow]:
            return [TraceRow(*row) for row in conn.execute(_ROWS, params)]

        return await self._db.read(op)

    async def locate(self, identifier: str) -> list[tuple[str, int]]:
        def op(conn: sqlite3.Connection) -> list[tuple[str, int]]:
            return [(cid, seq) for cid, seq in conn.execute(_LOCATE, {"id": identifier})]

        return await self._db.read(op)

    async def purge(self, before_us: int) -> int:
        def op(conn: sqlite3.Connection) -> int:
            return conn.execute(_PURGE, {"before": before_us}).rowcount

        return await self._db.write("trace_purge", op)

    async def delivery(self, since_us: int, until_us: int, within_us: int) -> list[DeliveryCount]:
        params = {"since": since_us, "until": until_us, "within": within_us}

        def op(conn: sqlite3.Connection) -> list[DeliveryCount]:
            return [DeliveryCount(*row) for row in conn.execute(_DELIVERY, params)]

        return await self._db.read(op)
