"""Change-log runners on both engines: at least once across a worker cut
short mid-batch and restarted, lag back to 0, and one active runner per
worker name with takeover after the lease expires. Every wait is bounded
(``until`` and ``WAIT_S``)."""

from __future__ import annotations

import asyncio
import dataclasses
import time

from tests.changelog.support import (
    FAST,
    Recorder,
    crash,
    in_seq_order_per_conversation,
    send,
    until,
)
from tidings.changelog.workers import ChangeWorkers
from tidings.core.ports.store.composite import Store
from tidings.observability.metrics import Metrics


def sample(metrics: Metrics, name: str, worker: str = "search") -> float | None:
    return metrics.registry.get_sample_value(name, {"worker": worker})


async def test_a_worker_cut_short_mid_batch_resumes_and_misses_nothing(store: Store) -> None:
    sent = await send(store, 40)
    cut = asyncio.Event()
    never = asyncio.Event()

    def block_at_17(handled: int) -> object:
        if handled == 17:  # the third batch (of 7) is partly handled
            cut.set()
            return never
        return None

    first = Recorder(interrupt=block_at_17)
    metrics = Metrics()
    node = ChangeWorkers(store, metrics, FAST, holder="first-run")
    node.register(first)
    node.start()
    async with asyncio.timeout(30):
        await cut.wait()
    await node.stop()  # the batch in hand is abandoned: its position is not saved
    saved = await store.consumer_position("search")
    assert saved == first.changes[13].position  # two whole batches
    assert len(first.changes) == 17

    sent += await send(store, 10)
    failed = False

    def fail_once(handled: int) -> object:
        nonlocal failed
        if handled == 2 and not failed:
            failed = True
            raise RuntimeError("index unavailable")
        return None

    second = Recorder(interrupt=fail_once)
    node = ChangeWorkers(store, metrics, FAST, holder="restarted")
    node.register(second)
    node.start()
    try:
        everything = {m.message_id for m in sent}
        await until(
            lambda: first.message_ids() | second.message_ids() >= everything, "every message"
        )
        await until(
            lambda: sample(metrics, "tidings_changelog_positions_behind") == 0,
            "the worker to catch up",
        )
        assert sample(metrics, "tidings_changelog_lag_seconds") == 0
        assert sample(metrics, "tidings_changelog_failures_total") == 1
    finally:
        await node.stop()
    assert second.changes[0].position > saved  # resumed where the first run saved
    assert second.changes[0] == first.changes[14]  # ... which it had not finished
    seen = first.changes + second.changes
    assert {c.message.message_id for c in seen} == everything
    assert in_seq_order_per_conversation(seen)
    # Handed over again: the cut batch's 3 changes, and the 2 before the failure.
    assert len(seen) == len(sent) + 3 + 2


async def test_one_runner_per_name_and_takeover_after_the_lease_expires(store: Store) -> None:
    options = dataclasses.replace(FAST, lease_ms=600)
    busy = [0, 0]
    holder, standby = Recorder(busy=busy), Recorder(busy=busy)
    metrics = Metrics()
    node_a = ChangeWorkers(store, metrics, options, holder="node-a")
    node_b = ChangeWorkers(store, Metrics(), options, holder="node-b")
    runner_a = node_a.register(holder)
    runner_b = node_b.register(standby)
    node_a.start()
    await until(lambda: runner_a.active, "node-a to take the lease")
    node_b.start()
    try:
        before = await send(store, 30)
        await until(
            lambda: holder.message_ids() >= {m.message_id for m in before}, "node-a to handle"
        )
        await asyncio.sleep(options.lease_ms / 1000)  # several renewals and standby polls
        assert standby.changes == []
        assert (runner_a.active, runner_b.active) == (True, False)
        crashed_at = time.monotonic()
        await crash(runner_a)
        after = await send(store, 20)
        await until(
            lambda: standby.message_ids() >= {m.message_id for m in after}, "node-b to take over"
        )
        assert standby.first_handled_at is not None
        # node-a renewed at most a third of a lease before it died.
        assert standby.first_handled_at - crashed_at >= options.lease_ms / 1000 * 0.5
        assert runner_b.active
        assert busy[1] == 1  # never two handlers at once
    finally:
        await node_b.stop()
        await node_a.stop()


async def test_a_worker_that_is_behind_reads_larger_batches_until_it_catches_up(
    store: Store,
) -> None:
    await send(store, 40)
    worker = Recorder()
    options = dataclasses.replace(FAST, catchup_batch_size=20)
    node = ChangeWorkers(store, Metrics(), options, holder="catching-up")
    node.register(worker)
    node.start()
    try:
        await until(lambda: len(worker.changes) == 40, "every message")
        await send(store, 3)
        await until(lambda: len(worker.changes) == 43, "the next messages")
    finally:
        await node.stop()
    # Full batches (7, then 20) are followed by catch-up reads; a short one
    # (13) returns the runner to the normal size for what comes next.
    assert worker.batch_sizes[:3] == [7, 20, 13]
    assert all(size <= 7 for size in worker.batch_sizes[3:])
