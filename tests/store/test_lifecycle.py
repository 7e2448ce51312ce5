"""Store conformance, lifecycle: a store answers, keeps its epoch and its data
across a reopen. Run on every engine through ``conftest.py``'s fixtures."""

from __future__ import annotations

from typing import Protocol

from tests.store.support import (
    StoreOpener,
    make_user,
)
from tidings.core.ports.store.lifecycle import StoreLifecycle
from tidings.core.ports.store.restores import RestoreStore


class Subject(StoreLifecycle, RestoreStore, Protocol):
    """Starting, pinging and the epoch a started store announces."""


# -- lifecycle -------------------------------------------------------------------
async def test_ping_and_epoch(store: Subject) -> None:
    await store.ping()
    assert isinstance(store.epoch, str)
    assert store.epoch


async def test_epoch_and_data_persist_across_reopen(open_store: StoreOpener) -> None:
    first = await open_store()
    try:
        epoch = first.epoch
        alice = await make_user(first, "alice")
    finally:
        await first.close()
    second = await open_store()
    try:
        assert second.epoch == epoch
        assert await second.get_user(alice.user_id) == alice
    finally:
        await second.close()
