"""The search feature's tests run on both engines: SQLite (FTS5 files beside
the store) and PostgreSQL (with Redis), as the end-to-end suite does."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.features.search.world import World, open_world
from tests.services_postgres import PostgresService, postgres_service

__all__ = ["postgres_service"]


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def world(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[World]:
    """A fresh store (a new PostgreSQL database, or a SQLite file) and its search engine."""
    url = None
    if backend == "postgres":
        service: PostgresService = request.getfixturevalue("postgres_service")
        url = await service.create_database()
    async for opened in open_world(tmp_path, url):
        yield opened
    if backend == "postgres":
        await service.drop_pending()
