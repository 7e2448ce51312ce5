"""The probe feature's tests run on both deployments, as the end-to-end suite does."""

from __future__ import annotations

import pytest

from tests.services_postgres import postgres_service

__all__ = ["postgres_service"]


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)
