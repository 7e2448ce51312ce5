"""PostgreSQL-specific messaging tests: the upgrade to schema version 7 (the
membership kinds it backfills, and the functions of version 6 that nodes
still running the previous code call) and what a batch of plain texts
sends. The behaviour itself is the conformance suite's (test_messaging.py).
"""

from __future__ import annotations

import asyncio
import json

import asyncpg  # type: ignore[import-untyped]

from tests.services_postgres import PostgresService, create_test_database
from tidings.core.models import NewMessage
from tidings.store.postgres import DIALECT, _side_columns, migrate
from tidings.store.postgres_batches import AppendItem
from tidings.store.shipped import shipped

NOW = 1_700_000_000_000


async def _schema_version_6(conn: asyncpg.Connection) -> None:
    """The database as the previous release left it."""
    await conn.execute(DIALECT.version_table)
    for version, name, script in shipped("tidings.store", "postgres"):
        if version <= 6:
            await conn.execute(script)
            await conn.execute(DIALECT.insert_version, version, name, NOW)
    await conn.execute(
        "INSERT INTO users (user_id, username, password_hash, created_at)"
        " VALUES ('u_a', 'alice', 'h', $1)",
        NOW,
    )
    await conn.execute(
        "INSERT INTO conversations (conversation_id, kind, title, created_by, created_at,"
        " last_seq, version) VALUES ('c_1', 'group', 't', 'u_a', $1, 0, 1)",
        NOW,
    )
    await conn.execute(
        "INSERT INTO members (conversation_id, user_id, role, joined_at)"
        " VALUES ('c_1', 'u_a', 'admin', $1)",
        NOW,
    )


async def test_upgrade_backfills_kinds_and_keeps_old_functions(
    postgres_service: PostgresService,
) -> None:
    url = await create_test_database(migrated=False)
    conn = await asyncpg.connect(url)
    try:
        await _schema_version_6(conn)
        old_append_many = "SELECT * FROM tidings_append_many($1, $2, $3, $4, $5, $6, $7)"
        contents = [
            json.dumps({"kind": "member_added", "user_ids": ["u_a"]}).encode(),
            json.dumps({"text": 'about "member_added"'}).encode(),  # the bytes, not the kind
            b'\xff"member_added',  # neither UTF-8 nor JSON: stays a text
            b'{"kind":"member_removed"}',
            b"[1]",
        ]
        n = len(contents)
        keys = [f"k{i}" for i in range(n)]
        await conn.fetch(
            old_append_many, ["c_1"] * n, ["u_a"] * n, ["d"] * n, keys, contents, [NOW] * n, keys
        )
        await migrate(conn)
        kinds = await conn.fetch("SELECT kind FROM messages ORDER BY seq")
        assert [r[0] for r in kinds] == ["member_added", None, None, "member_removed", None]
        # A node of the previous release appends through the old signatures.
        rows = await conn.fetch(
            old_append_many, ["c_1"], ["u_a"], ["d"], ["old"], [b"{}"], [NOW], ["m_old"]
        )
        assert [(r["seq"], r["outcome"]) for r in rows] == [(6, "stored")]
        single = await conn.fetchrow(
            "SELECT * FROM tidings_append($1, $2, $3, $4, $5, $6, $7)",
            "c_1",
            "u_a",
            "d",
            "old-single",
            b"{}",
            NOW,
            "m_single",
        )
        assert (single["seq"], single["duplicate"]) == (7, False)
        stored = await conn.fetch(
            "SELECT kind, target_seq, mentions FROM messages WHERE seq >= 6 ORDER BY seq"
        )
        assert [tuple(r) for r in stored] == [(None, None, None)] * 2
    finally:
        await conn.close()


async def test_a_batch_of_texts_sends_no_side_arrays() -> None:
    """The hot path: plain texts add four NULL parameters, not four arrays."""
    loop = asyncio.get_running_loop()

    def item(message: NewMessage, mentions: str | None = None) -> AppendItem:
        return AppendItem(message, "m_x", loop.create_future(), mentions)

    plain = NewMessage("c", "u", "d", "k", b"{}", NOW)
    assert _side_columns([item(plain), item(plain)]) == (None, None, None, None)
    edit = NewMessage("c", "u", "d", "k2", b"{}", NOW, kind="edit", target=1)
    assert _side_columns([item(plain), item(edit, " u2 ")]) == (
        [None, "edit"],
        [None, 1],
        None,
        [None, " u2 "],
    )
