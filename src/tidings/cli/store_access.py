"""Opening the configured store from a command, as ``tidings serve`` would find it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from tidings.cli.errors import OperatorError, redact
from tidings.cli.locations import prepare_new, require_existing, sqlite_path
from tidings.core.ports.store.composite import Store
from tidings.settings import Settings


@asynccontextmanager
async def using_store(settings: Settings, *, existing: bool = True) -> AsyncIterator[Store]:
    """The started store; with ``existing`` (every command but ``serve`` and
    ``migrate``) a location without a Tidings store is refused, not created."""
    from tidings.app import open_store

    if existing:
        require_existing(settings)
        if sqlite_path(settings) is None:
            await _require_postgres_schema(settings.store_url)
    else:
        prepare_new(settings)
    store = open_store(settings)
    await store.start()
    try:
        yield store
    finally:
        await store.close()


async def _require_postgres_schema(url: str) -> None:
    from tidings.store.postgres import installed_schema_version

    if await installed_schema_version(url) == 0:
        raise OperatorError(
            f"no Tidings store in {redact(url)}; check --store / TIDINGS_STORE, or create"
            " one with `tidings migrate`"
        )
