"""Restores from backup (docs/reliability.md, "Disaster recovery"): the store's
epoch, the record of each restore and the devices' reconcile reports.

The epoch lives here rather than with the lifecycle because a restore is what
changes it, and services read it (sync tokens, the ``hello`` frame) without
any business starting or closing the store.
"""

from __future__ import annotations

from typing import Protocol

from tidings.core.models import ReconcileReport, Restore


class RestoreStore(Protocol):
    @property
    def epoch(self) -> str:
        """Random id fixed when the store was created; changed by a restore."""
        ...

    async def backup_time(self) -> int | None:
        """When the history in this store ends (ms): the stamp ``tidings backup``
        wrote into the copy, else (no stamp: a ``pg_restore``, an old backup)
        the newest message's or conversation's time, since anything after it
        may be lost; ``None`` for an empty store."""
        ...

    async def record_restore(self, backup_ts: int, restored_ts: int) -> Restore:
        """Give the store a new random epoch and record the restore, atomically:
        run after restoring a backup, so that clients learn that history after
        ``backup_ts`` is gone. Consumes the backup stamp."""
        ...

    async def latest_restore(self) -> Restore | None:
        """The most recent :meth:`record_restore`, if any."""
        ...

    async def save_reconcile_report(self, report: ReconcileReport) -> None:
        """Store a device's report for an epoch, replacing its previous one.

        Every conversation must be one the user is a member of
        (``NOT_MEMBER``, and nothing is stored).
        """
        ...

    async def reconcile_reports(self, epoch: str) -> list[ReconcileReport]:
        """The reports for ``epoch``, by device_id, each one's gaps by conversation_id."""
        ...
