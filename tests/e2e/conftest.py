"""The end-to-end suite runs on both deployments: SQLite with the in-process
bus (one command on a laptop) and PostgreSQL with Redis (a cluster)."""

from __future__ import annotations

import pytest

from tests.services_postgres import postgres_service

__all__ = ["postgres_service"]


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)
