"""The trace feature's end-to-end tests run on both deployments, as the
end-to-end suite does; on PostgreSQL with Redis every message is traced (the
cluster default samples a tenth)."""

from __future__ import annotations

import pytest

from tests.services_postgres import postgres_service

__all__ = ["postgres_service"]


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("TIDINGS_TRACE_ENABLED", "true")
    monkeypatch.setenv("TIDINGS_TRACE_CLUSTER_SAMPLE_RATE", "1")
    monkeypatch.setenv("TIDINGS_TRACE_FLUSH_MS", "50")
    return str(request.param)
