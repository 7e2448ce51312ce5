"""Workers registered with a node run while it runs (SQLite, in-process bus)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.changelog.support import Recorder, send, until
from tests.conftest import make_settings
from tidings.app import build_node
from tidings.store.sqlite import SqliteStore


def changelog_tasks() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("changelog:")]


async def test_registered_workers_start_and_stop_with_the_node(tmp_path: Path) -> None:
    worker = Recorder("recorder")
    settings = make_settings(tmp_path, changelog_poll_ms=20)
    node = build_node(settings, workers=[worker])
    await node.start()
    try:
        names = sorted(t.get_name() for t in changelog_tasks())
        assert names == ["changelog:push", "changelog:recorder", "changelog:search"]
        sent = await send(node.store, 12)
        await until(lambda: worker.message_ids() >= {m.message_id for m in sent}, "the worker")
    finally:
        await node.stop()
    assert changelog_tasks() == []
    store = SqliteStore(settings.store_url.removeprefix("sqlite://"))
    await store.start()
    try:
        assert await store.consumer_position("recorder") > 0
        # The stopped node released its lease: another takes over at once.
        assert await store.take_consumer_lease("recorder", "another-node", 60_000)
    finally:
        await store.close()


async def test_without_workers_only_the_built_in_features_run(tmp_path: Path) -> None:
    node = build_node(make_settings(tmp_path))
    await node.start()
    try:
        assert sorted(t.get_name() for t in changelog_tasks()) == [
            "changelog:push",
            "changelog:search",
        ]
    finally:
        await node.stop()
