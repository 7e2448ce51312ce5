"""The search feature's tests run on both engines: SQLite (FTS5 files beside
the store) and PostgreSQL (with Redis), as the end-to-end suite does."""

from __future__ import annotations

import pytest

from tests.services_postgres import postgres_service

__all__ = ["postgres_service"]


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)
