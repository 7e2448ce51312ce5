"""Fixtures for the store suites: one fresh, empty store per test and backend.

``STORE_FACTORIES`` maps a backend name to a function that, given the test's
private directory, returns an *opener*: a coroutine function that opens (a new
handle on) that test's database. The conformance suite runs once per entry;
a PostgreSQL backend adds one entry (e.g. a fresh schema per test, skipped
when no server is configured) and nothing else changes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.services_postgres import PostgresService, create_test_database, drop_test_databases
from tests.services_postgres import postgres_service as postgres_service  # the fixture
from tests.store.support import StoreOpener
from tidings.core.ports.store.composite import Store
from tidings.store.postgres import PostgresStore
from tidings.store.sqlite import SqliteStore


def _sqlite(tmp_path: Path) -> StoreOpener:
    async def open_store() -> Store:
        store = SqliteStore(str(tmp_path / "tidings.db"))
        await store.start()
        return store

    return open_store


def _postgres(tmp_path: Path) -> StoreOpener:
    """A fresh database per test (tests/services_postgres.py), created on first open."""
    url: str | None = None

    async def open_store() -> Store:
        nonlocal url
        if url is None:
            url = await create_test_database()
        store = PostgresStore(url)
        await store.start()
        return store

    return open_store


STORE_FACTORIES: dict[str, Callable[[Path], StoreOpener]] = {
    "sqlite": _sqlite,
    "postgres": _postgres,
}


@pytest.fixture(autouse=True)
async def _drop_postgres_databases(postgres_service: PostgresService) -> AsyncIterator[None]:
    """Drop the databases the test's postgres opener created (after its stores closed)."""
    yield
    await drop_test_databases()


@pytest.fixture(params=sorted(STORE_FACTORIES), ids=lambda name: f"store={name}")
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreOpener:
    """The opener of this test's (initially empty) database, for reopen tests."""
    name = str(request.param)
    return STORE_FACTORIES[name](tmp_path)


@pytest.fixture
async def store(open_store: StoreOpener) -> AsyncIterator[Store]:
    """A started, empty store, closed after the test."""
    opened = await open_store()
    try:
        yield opened
    finally:
        await opened.close()
