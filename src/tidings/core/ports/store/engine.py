"""How a feature's own backend reaches the store's database.

A feature keeps its tables beside the core's (its migrations run in the same
database, ``store/migrator.py``) and its SQL in its own package
(``features/<name>/sqlite.py``, ``postgres.py``). It reaches the database
through the store rather than through a connection of its own: on SQLite its
writes then go through the store's one writer (group commit, and no second
writer contending for the file's lock), on PostgreSQL it shares the pool, its
size limits and its translation of driver errors into ``TidingsError``.

Connections are typed ``Any`` here because the core imports no database
engine; a feature's backend module names ``sqlite3.Connection`` or asyncpg's.
Narrow an :data:`EngineHandle` on ``engine``.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Literal, Protocol, TypeVar

T = TypeVar("T")


class SqliteAccess(Protocol):
    @property
    def engine(self) -> Literal["sqlite"]: ...

    async def write(self, name: str, fn: Callable[[Any], T]) -> T:
        """Run ``fn(conn)`` on the store's writer inside its transaction (committed
        with its group; rolled back alone, as a savepoint, if ``fn`` raises)."""
        ...

    async def read(self, fn: Callable[[Any], T]) -> T:
        """Run ``fn(conn)`` on a reader connection off the event loop."""
        ...


class PostgresAccess(Protocol):
    @property
    def engine(self) -> Literal["postgres"]: ...

    def connection(self) -> AbstractAsyncContextManager[Any]:
        """A pooled asyncpg connection; driver errors leave as ``TidingsError``."""
        ...


EngineHandle = SqliteAccess | PostgresAccess


class EngineAccess(Protocol):
    def engine_access(self) -> EngineHandle:
        """The database this store keeps its data in, for features' backends."""
        ...
