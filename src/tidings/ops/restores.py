"""Recording a restore from backup: the epoch change plus the lost window."""

from __future__ import annotations

from tidings.core.ids import now_ms
from tidings.core.models import Restore
from tidings.core.ports.store.restores import RestoreStore

UNKNOWN_BACKUP_TS = 0
"""``from_ts`` when the restored store holds nothing to date it by (an empty
store): everything before the restore may be lost, and saying so is honest."""


async def mark_restored(store: RestoreStore) -> Restore:
    """Give a just-restored store a new epoch and record what may be lost: from
    the backup's time
    (:meth:`~tidings.core.ports.store.restores.RestoreStore.backup_time`) to now."""
    backup_ts = await store.backup_time()
    return await store.record_restore(
        UNKNOWN_BACKUP_TS if backup_ts is None else backup_ts, now_ms()
    )
