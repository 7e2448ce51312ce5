"""The cluster engine: PostgreSQL full-text search in the store's own database.

Entries are rows of ``search_entries`` (a ``tsvector`` of the folded text
under a GIN index, and the original text for snippets) tagged with their
generation; ``search_generations`` says which one is live. Every node's
queries join ``members`` and ``conversations`` of the same database in the
same statement, and see a promotion (one transaction) at once. It uses the
store's own pool (``FeatureContext.database``), not one of its own. Queries use
``websearch_to_tsquery`` over the folded terms; ranking is ``ts_rank_cd``
with recency (``sql.RECENCY_MS``). The schema is the feature's migration
``postgres_001_search.sql``.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from tidings.core.ports.store.engine import PostgresAccess
from tidings.features.search import sql
from tidings.features.search.port import (
    Edit,
    Generation,
    GenerationGone,
    Hit,
    Op,
    Put,
    Remove,
    Search,
)
from tidings.features.search.text import fold

CONFIG = "tidings_search"

DIALECT = sql.Dialect(
    placeholder=lambda n: f"${n}",
    like="ILIKE",
    members="members",
    conversations="conversations",
    messages="messages",
    text_of="(convert_from(e.content, 'UTF8')::jsonb ->> 'text')",
    kind_of="coalesce(convert_from(e.content, 'UTF8')::jsonb ->> 'kind', 'text')",
)

_PUT = (
    "INSERT INTO search_entries (generation, conversation_id, seq, sender_id, ts, text, body)"
    f" VALUES ($1, $2, $3, $4, $5, $6, to_tsvector('{CONFIG}', $7))"
    " ON CONFLICT (generation, conversation_id, seq) DO UPDATE SET"
    " sender_id = excluded.sender_id, ts = excluded.ts, text = excluded.text,"
    " body = excluded.body"
)
_EDIT = (
    f"UPDATE search_entries SET text = $2, body = to_tsvector('{CONFIG}', $3)"
    " WHERE generation = $1 AND conversation_id = $4 AND seq = $5"
)
_REMOVE = "DELETE FROM search_entries WHERE generation = $1 AND conversation_id = $2 AND seq = $3"
_STATEMENTS: dict[type, str] = {Put: _PUT, Edit: _EDIT, Remove: _REMOVE}
_ROWS: dict[type, Callable[[str, Any], tuple[Any, ...]]] = {
    Put: lambda g, op: (g, op.conversation_id, op.seq, op.sender_id, op.ts, op.text, fold(op.text)),
    Edit: lambda g, op: (g, op.text, fold(op.text), op.conversation_id, op.seq),
    Remove: lambda g, op: (g, op.conversation_id, op.seq),
}


def websearch(terms: Sequence[str], excluded: Sequence[str]) -> str:
    """``websearch_to_tsquery`` syntax: every term a quoted phrase, exclusions with ``-``
    (``query.parse`` leaves no ``"`` in a term)."""
    return " ".join([*(f'"{fold(t)}"' for t in terms), *(f'-"{fold(t)}"' for t in excluded)])


class PostgresSearchIndex:
    """The :class:`~tidings.features.search.port.SearchIndex` of a PostgreSQL store,
    on the store's own pool (``FeatureContext.database``): its size limits,
    statement timeout and translation of driver errors to ``unavailable``."""

    def __init__(self, database: PostgresAccess) -> None:
        self._database = database

    async def start(self) -> None:
        """Nothing to open: the pool is the store's."""

    async def close(self) -> None:
        """Nothing to close: the pool is the store's."""

    def _conn(self) -> AbstractAsyncContextManager[Any]:
        return self._database.connection()

    async def live(self) -> Generation | None:
        async with self._conn() as conn:
            row = await conn.fetchrow("SELECT name, position FROM search_generations WHERE live")
        return None if row is None else Generation(row["name"], row["position"])

    async def check(self, generation: Generation) -> None:
        """PostgreSQL checks its own pages; the generation only has to exist."""
        async with self._conn() as conn:
            if not await conn.fetchval(
                "SELECT true FROM search_generations WHERE name = $1", generation.name
            ):
                raise GenerationGone(generation.name)

    async def create(self) -> Generation:
        name = f"gen-{time.time_ns()}"
        async with self._conn() as conn:
            await conn.execute("INSERT INTO search_generations (name) VALUES ($1)", name)
        return Generation(name, 0)

    async def apply(self, generation: Generation, ops: Sequence[Op], position: int) -> Generation:
        name = generation.name
        async with self._conn() as conn, conn.transaction():
            held = await conn.fetchval(
                "SELECT true FROM search_generations WHERE name = $1 FOR SHARE", name
            )
            if not held:
                raise GenerationGone(name)
            for kind, run in itertools.groupby(ops, type):
                await conn.executemany(_STATEMENTS[kind], [_ROWS[kind](name, op) for op in run])
            await conn.execute(
                "UPDATE search_generations SET position = greatest(position, $2) WHERE name = $1",
                name,
                position,
            )
        return Generation(name, position)

    async def promote(self, generation: Generation) -> None:
        async with self._conn() as conn, conn.transaction():
            await conn.execute("LOCK TABLE search_generations IN SHARE ROW EXCLUSIVE MODE")
            await conn.execute(
                "DELETE FROM search_generations WHERE live AND name <> $1", generation.name
            )
            updated = await conn.execute(
                "UPDATE search_generations SET live = true WHERE name = $1", generation.name
            )
            if updated != "UPDATE 1":
                raise GenerationGone(generation.name)

    async def discard(self, generation: Generation) -> None:
        async with self._conn() as conn:
            await conn.execute("DELETE FROM search_generations WHERE name = $1", generation.name)

    async def expire(self, generation: Generation, before_ts: int) -> int:
        async with self._conn() as conn:
            status = await conn.execute(
                "DELETE FROM search_entries AS e USING conversations AS c"
                " WHERE e.generation = $1 AND c.conversation_id = e.conversation_id"
                " AND (e.seq <= c.purged_seq OR e.ts < $2)",
                generation.name,
                before_ts,
            )
        return int(status.split()[-1])

    async def search(self, generation: Generation, search: Search) -> list[Hit]:
        query = search.query
        text = websearch(query.terms, query.excluded)

        def tsquery(st: sql.Statement) -> str:
            return f"websearch_to_tsquery('{CONFIG}', {st.arg(text)})"

        def match(st: sql.Statement) -> str:
            # The searcher's conversations named to the planner as well as
            # joined: it can then read a common word's few entries there by
            # the primary key instead of every match from the GIN index.
            mine = f"SELECT conversation_id FROM members WHERE user_id = {st.arg(search.user_id)}"
            return (
                f"e.generation = {st.arg(generation.name)} AND e.body @@ {tsquery(st)}"
                f" AND e.conversation_id = ANY(ARRAY({mine}))"
            )

        def score(st: sql.Statement) -> str:
            return (
                f"(-10 * ts_rank_cd(e.body, {tsquery(st)}) - e.ts / {float(sql.RECENCY_MS)})"
                "::float8"
            )

        return await self._hits(sql.index_page(DIALECT, search, "search_entries e", match, score))

    async def scan(self, search: Search) -> list[Hit]:
        return await self._hits(sql.store_page(DIALECT, search))

    async def _hits(self, st: sql.Statement) -> list[Hit]:
        async with self._conn() as conn:
            rows = await conn.fetch(st.text, *st.args)
        return [Hit(*row) for row in rows]
