"""Store conformance, engine access: a feature's backend reaches the store's
own database (its writer on SQLite, its pool on PostgreSQL), sees the core's
tables, and a failed write changes nothing."""

from __future__ import annotations

from typing import Any

import pytest

from tests.store.support import make_user
from tidings.core.ports.store.composite import Store


async def test_a_feature_reads_and_writes_the_store_database(store: Store) -> None:
    alice = await make_user(store, "alice")
    database = store.engine_access()
    if database.engine == "sqlite":

        def create(conn: Any) -> None:
            conn.execute("CREATE TABLE feature_notes (user_id TEXT, note TEXT)")
            conn.execute("INSERT INTO feature_notes VALUES (?, 'hi')", (alice.user_id,))

        def broken(conn: Any) -> None:
            conn.execute("INSERT INTO feature_notes VALUES (?, 'lost')", (alice.user_id,))
            raise ValueError("refused after writing")

        def notes(conn: Any) -> list[tuple[str, str]]:
            return [
                tuple(row)
                for row in conn.execute(
                    "SELECT u.username, n.note FROM feature_notes n"
                    " JOIN users u ON u.user_id = n.user_id"
                )
            ]

        await database.write("create", create)
        with pytest.raises(ValueError, match="refused"):
            await database.write("broken", broken)
        assert await database.read(notes) == [("alice", "hi")]
    else:
        async with database.connection() as conn:
            await conn.execute("CREATE TABLE feature_notes (user_id text, note text)")
            await conn.execute("INSERT INTO feature_notes VALUES ($1, 'hi')", alice.user_id)

        async def broken_transaction() -> None:
            async with database.connection() as conn, conn.transaction():
                await conn.execute("INSERT INTO feature_notes VALUES ($1, 'lost')", alice.user_id)
                raise ValueError("refused after writing")

        with pytest.raises(ValueError, match="refused"):
            await broken_transaction()
        async with database.connection() as conn:
            rows = await conn.fetch(
                "SELECT u.username, n.note FROM feature_notes n"
                " JOIN users u ON u.user_id = n.user_id"
            )
        assert [tuple(row) for row in rows] == [("alice", "hi")]
