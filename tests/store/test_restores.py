"""Store conformance, restores (``RestoreStore``): the backup time, recording a
restore and reconcile reports. Run on every engine through ``conftest.py``'s
fixtures."""

from __future__ import annotations

from typing import Protocol

from tests.store.support import (
    GROUP,
    NOW,
    Pair,
    StoreOpener,
    expect_error,
    make_user,
    pair,
)
from tidings.core.errors import ErrorCode
from tidings.core.models import (
    NewMessage,
    ReconcileGap,
    ReconcileReport,
)
from tidings.core.ports.store.accounts import AccountStore
from tidings.core.ports.store.conversations import ConversationStore
from tidings.core.ports.store.messages import MessageLog
from tidings.core.ports.store.restores import RestoreStore


class Subject(AccountStore, ConversationStore, MessageLog, RestoreStore, Protocol):
    """Restores, with the conversations and messages they are about."""


# -- restores from backup ------------------------------------------------------------
async def test_backup_time_without_stamp_is_the_newest_data(store: Subject) -> None:
    assert await store.backup_time() is None  # empty: nothing to date
    p = await pair(store)
    assert await store.backup_time() == NOW  # the conversation's creation
    late = NewMessage(p.cid, p.alice.user_id, p.a_dev.device_id, "late", b'{"text":"x"}', NOW + 5)
    await store.append(late)
    assert await store.backup_time() == NOW + 5  # the newest message
    await store.create_conversation(GROUP, p.bob.user_id, [], "solo", NOW + 9)
    assert await store.backup_time() == NOW + 9


async def test_record_restore_changes_epoch_and_persists(open_store: StoreOpener) -> None:
    first = await open_store()
    try:
        assert await first.latest_restore() is None
        old = first.epoch
        restore = await first.record_restore(NOW - 3_600_000, NOW)
        assert restore.epoch == first.epoch != old
        assert (restore.previous_epoch, restore.from_ts, restore.to_ts) == (
            old,
            NOW - 3_600_000,
            NOW,
        )
        second = await first.record_restore(NOW - 60_000, NOW + 1)
        assert second.previous_epoch == restore.epoch
    finally:
        await first.close()
    reopened = await open_store()
    try:
        assert reopened.epoch == second.epoch
        assert await reopened.latest_restore() == second
    finally:
        await reopened.close()


def _report(p: Pair, epoch: str, *gaps: ReconcileGap, at: int = NOW) -> ReconcileReport:
    return ReconcileReport(epoch, p.a_dev.device_id, p.alice.user_id, at, list(gaps))


async def test_reconcile_reports_are_per_device_and_replaced(store: Subject) -> None:
    p = await pair(store)
    other, _ = await store.create_conversation(GROUP, p.alice.user_id, [], "notes", NOW)
    epoch = (await store.record_restore(NOW - 1000, NOW)).epoch
    first = _report(p, epoch, ReconcileGap(p.cid, 4, 9, 2, 3))
    await store.save_reconcile_report(first)
    assert await store.reconcile_reports(epoch) == [first]
    # A re-report replaces the device's previous one, gaps and all.
    gaps = [ReconcileGap(p.cid, 4, 7, 1, 2), ReconcileGap(other.conversation_id, 0, 2, 2, 0)]
    again = _report(p, epoch, *sorted(gaps, key=lambda g: g.conversation_id), at=NOW + 5)
    await store.save_reconcile_report(again)
    # An empty report still says the device checked.
    bobs = ReconcileReport(epoch, p.b_dev.device_id, p.bob.user_id, NOW, [])
    await store.save_reconcile_report(bobs)
    expected = sorted([again, bobs], key=lambda r: r.device_id)
    assert await store.reconcile_reports(epoch) == expected
    assert await store.reconcile_reports("e_other") == []


async def test_reconcile_report_errors_change_nothing(store: Subject) -> None:
    p = await pair(store)
    carol = await make_user(store, "carol")
    private, _ = await store.create_conversation(GROUP, carol.user_id, [], "carol's", NOW)
    epoch = store.epoch
    stored = _report(p, epoch, ReconcileGap(p.cid, 1, 2, 1, 0))
    await store.save_reconcile_report(stored)
    outsider = _report(
        p, epoch, ReconcileGap(p.cid, 1, 5, 4, 0), ReconcileGap(private.conversation_id, 0, 1, 0, 1)
    )
    await expect_error(ErrorCode.NOT_MEMBER, store.save_reconcile_report(outsider))
    unknown = _report(p, epoch, ReconcileGap("c_unknown", 0, 1, 0, 1))
    await expect_error(ErrorCode.NOT_MEMBER, store.save_reconcile_report(unknown))
    twice = _report(p, epoch, ReconcileGap(p.cid, 1, 5, 4, 0), ReconcileGap(p.cid, 1, 6, 5, 0))
    await expect_error(ErrorCode.BAD_REQUEST, store.save_reconcile_report(twice))
    assert await store.reconcile_reports(epoch) == [stored]
