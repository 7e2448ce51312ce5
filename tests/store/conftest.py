"""Fixtures for the store suites: one fresh, empty store per test and backend.

``STORE_FACTORIES`` maps a backend name to a function that, given the test's
private directory, returns an *opener*: a coroutine function that opens (a new
handle on) that test's database. The conformance suite runs once per entry;
a PostgreSQL backend adds one entry (e.g. a fresh schema per test, skipped
when no server is configured) and nothing else changes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from tidings.store.base import Store
from tidings.store.sqlite import SqliteStore

StoreOpener = Callable[[], Awaitable[Store]]
"""Opens a started store on the test's database; each call is a new handle."""


def _sqlite(tmp_path: Path) -> StoreOpener:
    async def open_store() -> Store:
        store = SqliteStore(str(tmp_path / "tidings.db"))
        await store.start()
        return store

    return open_store


STORE_FACTORIES: dict[str, Callable[[Path], StoreOpener]] = {
    "sqlite": _sqlite,
}


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
