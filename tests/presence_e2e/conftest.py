"""Fixtures of the presence/typing/receipts end-to-end suite.

``presence_settings`` runs a test against each presence backend: the
in-process one, and Redis (the shared test Redis, with a key prefix of the
test's own, removed afterwards). ``postgres_service`` is re-exported so that
tests may parametrise ``backend`` over "postgres" (PostgreSQL + Redis bus).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.services_postgres import postgres_service

__all__ = ["postgres_service"]


@pytest.fixture(params=["memory", "redis"])
async def presence_settings(request: pytest.FixtureRequest) -> AsyncIterator[dict[str, Any]]:
    """Server settings selecting one presence backend."""
    if request.param == "memory":
        yield {"presence": "memory://"}
        return
    from tests.services_redis import delete_prefixed_keys, redis_url, unique_prefix

    url = redis_url()  # skips (or fails in CI) without a Redis
    prefix = unique_prefix()
    try:
        # The presence keys live under bus_prefix + "presence:" (app.open_presence).
        yield {"presence": url, "bus_prefix": prefix}
    finally:
        await delete_prefixed_keys(url, prefix)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """One HTTP/WebSocket client session without a connection limit."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        yield http
