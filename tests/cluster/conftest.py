"""Fixtures of the cluster suite: real PostgreSQL and Redis, nodes in subprocesses."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.cluster.support import Cluster
from tests.services_postgres import PostgresService, postgres_service
from tests.services_redis import delete_prefixed_keys, redis_url, unique_prefix

__all__ = ["cluster", "postgres_service"]


@pytest.fixture
async def cluster(postgres_service: PostgresService, tmp_path: Path) -> AsyncIterator[Cluster]:
    """A fresh database and Redis prefix of this test's own; every node the
    test starts is stopped by PID afterwards, and the database and keys go.

    In CI (CI=true) a missing PostgreSQL or Redis fails the test (the service
    helpers do that); elsewhere it is started from system binaries or skipped.
    """
    bus, prefix = redis_url(), unique_prefix()
    store = await postgres_service.create_database()
    group = Cluster(store, bus, prefix, tmp_path)
    try:
        yield group
    finally:
        try:
            await group.shutdown()
        finally:
            await postgres_service.drop_pending()
            await delete_prefixed_keys(bus, prefix)
