"""Push tests run on SQLite with the in-process bus and on PostgreSQL with
Redis; the push endpoints are local servers, allowed by the allow-list."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.features.push.support import Endpoint
from tests.services_postgres import postgres_service

__all__ = ["postgres_service"]

DELAY_MS = 400


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(autouse=True)
def _push_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDINGS_PUSH_DELAY_MS", str(DELAY_MS))
    monkeypatch.setenv("TIDINGS_PUSH_POLL_MS", "50")
    monkeypatch.setenv("TIDINGS_PUSH_WEBHOOK_ALLOW", "127.0.0.1/32")
    monkeypatch.setenv("TIDINGS_PUSH_RETRY_BASE_MS", "100")


@pytest.fixture
async def endpoint() -> AsyncIterator[Endpoint]:
    started = await Endpoint().start()
    try:
        yield started
    finally:
        await started.stop()
