"""The PostgreSQL side of restores from backup: the restore record and the
devices' reconcile reports (migration ``postgres_005``); the twin of
``sqlite_restores.py``. Coroutines of an asyncpg connection, which
:class:`~tidings.store.postgres.PostgresStore` takes from its pool.
"""

from __future__ import annotations

from typing import Any

from tidings.core.errors import ErrorCode, TidingsError
from tidings.core.models import ReconcileGap, ReconcileReport, Restore
from tidings.store.rules import report_conversations

# See sqlite_restores._BACKUP_TIME: the stamp, else the newest data, found
# through primary keys without scanning messages.
_BACKUP_TIME = (
    "SELECT (SELECT taken_at FROM backup_stamp) AS stamp,"
    " (SELECT max(m.ts) FROM conversations AS c JOIN messages AS m"
    "   ON m.conversation_id = c.conversation_id AND m.seq = c.last_seq) AS newest_message,"
    " (SELECT max(created_at) FROM conversations) AS newest_conversation"
)
_RESTORE_COLUMNS = "epoch, previous_epoch, from_ts, to_ts"


async def backup_time(conn: Any) -> int | None:
    """See :meth:`~tidings.core.ports.store.restores.RestoreStore.backup_time`."""
    row = await conn.fetchrow(_BACKUP_TIME)
    if row["stamp"] is not None:
        return int(row["stamp"])
    times = [int(t) for t in (row["newest_message"], row["newest_conversation"]) if t is not None]
    return max(times) if times else None


async def record_restore(conn: Any, epoch: str, backup_ts: int, restored_ts: int) -> Restore:
    """Switch to ``epoch`` and record the restore, in one transaction."""
    async with conn.transaction():
        previous = await conn.fetchval("SELECT epoch FROM meta FOR UPDATE")
        restore = Restore(epoch, str(previous), backup_ts, restored_ts)
        await conn.execute("UPDATE meta SET epoch = $1", epoch)
        await conn.execute(
            f"INSERT INTO restores ({_RESTORE_COLUMNS}) VALUES ($1, $2, $3, $4)",
            restore.epoch,
            restore.previous_epoch,
            restore.from_ts,
            restore.to_ts,
        )
        await conn.execute("DELETE FROM backup_stamp")
    return restore


async def latest_restore(conn: Any) -> Restore | None:
    """See :meth:`~tidings.core.ports.store.restores.RestoreStore.latest_restore`."""
    row = await conn.fetchrow(
        f"SELECT {_RESTORE_COLUMNS} FROM restores ORDER BY to_ts DESC, epoch DESC LIMIT 1"
    )
    if row is None:
        return None
    return Restore(str(row["epoch"]), str(row["previous_epoch"]), row["from_ts"], row["to_ts"])


async def save_report(conn: Any, report: ReconcileReport) -> None:
    """Replace the device's report for the epoch, in one transaction."""
    cids = report_conversations(report)
    async with conn.transaction():
        outside = await conn.fetch(
            "SELECT c FROM unnest($1::text[]) AS c WHERE c NOT IN"
            " (SELECT conversation_id FROM members WHERE user_id = $2)",
            cids,
            report.user_id,
        )
        if outside:
            names = ", ".join(str(row["c"]) for row in outside)
            raise TidingsError(ErrorCode.NOT_MEMBER, f"not a member of {names}")
        key = (report.epoch, report.device_id)
        await conn.execute("DELETE FROM reconcile_gaps WHERE epoch = $1 AND device_id = $2", *key)
        await conn.execute(
            "INSERT INTO reconcile_reports (epoch, device_id, user_id, reported_at)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT (epoch, device_id) DO UPDATE"
            " SET user_id = excluded.user_id, reported_at = excluded.reported_at",
            *key,
            report.user_id,
            report.reported_at,
        )
        await conn.executemany(
            "INSERT INTO reconcile_gaps (epoch, device_id, conversation_id, server_last_seq,"
            " held_last_seq, own, others) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            [
                (*key, g.conversation_id, g.server_last_seq, g.held_last_seq, g.own, g.others)
                for g in report.gaps
            ],
        )


async def reports(conn: Any, epoch: str) -> list[ReconcileReport]:
    """See :meth:`~tidings.core.ports.store.restores.RestoreStore.reconcile_reports`."""
    gaps: dict[str, list[ReconcileGap]] = {}
    for row in await conn.fetch(
        "SELECT device_id, conversation_id, server_last_seq, held_last_seq, own, others"
        " FROM reconcile_gaps WHERE epoch = $1 ORDER BY device_id, conversation_id",
        epoch,
    ):
        gap = ReconcileGap(
            str(row["conversation_id"]),
            row["server_last_seq"],
            row["held_last_seq"],
            row["own"],
            row["others"],
        )
        gaps.setdefault(str(row["device_id"]), []).append(gap)
    rows = await conn.fetch(
        "SELECT device_id, user_id, reported_at FROM reconcile_reports"
        " WHERE epoch = $1 ORDER BY device_id",
        epoch,
    )
    return [
        ReconcileReport(
            epoch,
            str(r["device_id"]),
            str(r["user_id"]),
            r["reported_at"],
            gaps.get(r["device_id"], []),
        )
        for r in rows
    ]
