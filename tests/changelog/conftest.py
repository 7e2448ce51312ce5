"""The store fixtures of tests/store (each test on both engines, a fresh
database per test), for the change-log runner tests."""

from tests.store.conftest import (  # noqa: F401 (fixtures)
    _drop_postgres_databases,
    open_store,
    postgres_service,
    store,
)
