"""The SQLite side of restores from backup: the copy's stamp, the restore
record, and the devices' reconcile reports (migration ``sqlite_003``).

Functions of a connection, so that :class:`~tidings.store.sqlite.SqliteStore`
runs each on its writer (inside the batch's transaction) or on a reader, and
``backup_to`` can stamp a copy it holds open itself.
"""

from __future__ import annotations

import sqlite3

from tidings.core.errors import ErrorCode, TidingsError
from tidings.core.models import ReconcileGap, ReconcileReport, Restore
from tidings.store.rules import report_conversations
from tidings.store.sqlite_append import json_array

# The newest time the history holds: the stamp if the copy has one, else the
# newest last message (found through the primary key, one probe per
# conversation, no scan of messages) or conversation creation.
_BACKUP_TIME = (
    "SELECT (SELECT taken_at FROM backup_stamp),"
    " (SELECT max(m.ts) FROM conversations AS c JOIN messages AS m"
    "   ON m.conversation_id = c.conversation_id AND m.seq = c.last_seq),"
    " (SELECT max(created_at) FROM conversations)"
)
_RESTORE_COLUMNS = "epoch, previous_epoch, from_ts, to_ts"


def stamp_backup(conn: sqlite3.Connection, taken_at: int) -> None:
    """Record in a backup copy when it was taken."""
    conn.execute(
        "INSERT INTO backup_stamp (singleton, taken_at) VALUES (1, ?)"
        " ON CONFLICT (singleton) DO UPDATE SET taken_at = excluded.taken_at",
        (taken_at,),
    )


def backup_time(conn: sqlite3.Connection) -> int | None:
    """See :meth:`~tidings.core.ports.store.restores.RestoreStore.backup_time`."""
    stamp, newest_message, newest_conversation = conn.execute(_BACKUP_TIME).fetchone()
    if stamp is not None:
        return int(stamp)
    times = [t for t in (newest_message, newest_conversation) if t is not None]
    return max(times) if times else None


def record_restore(
    conn: sqlite3.Connection, epoch: str, backup_ts: int, restored_ts: int
) -> Restore:
    """Switch to ``epoch`` and record the restore (inside the caller's transaction)."""
    (previous,) = conn.execute("SELECT epoch FROM meta").fetchone()
    restore = Restore(epoch, str(previous), backup_ts, restored_ts)
    conn.execute("UPDATE meta SET epoch = ?", (epoch,))
    conn.execute(
        f"INSERT INTO restores ({_RESTORE_COLUMNS}) VALUES (?, ?, ?, ?)",
        (restore.epoch, restore.previous_epoch, restore.from_ts, restore.to_ts),
    )
    conn.execute("DELETE FROM backup_stamp")
    return restore


def latest_restore(conn: sqlite3.Connection) -> Restore | None:
    """See :meth:`~tidings.core.ports.store.restores.RestoreStore.latest_restore` (epoch ids are
    time-ordered, so they break a tie of ``to_ts``)."""
    row = conn.execute(
        f"SELECT {_RESTORE_COLUMNS} FROM restores ORDER BY to_ts DESC, epoch DESC LIMIT 1"
    ).fetchone()
    return None if row is None else Restore(*row)


def save_report(conn: sqlite3.Connection, report: ReconcileReport) -> None:
    """Replace the device's report for the epoch (inside the caller's transaction)."""
    cids = report_conversations(report)
    if cids:
        outside = conn.execute(
            "SELECT value FROM json_each(?) WHERE value NOT IN"
            " (SELECT conversation_id FROM members WHERE user_id = ?)",
            (json_array(cids), report.user_id),
        ).fetchall()
        if outside:
            raise TidingsError(
                ErrorCode.NOT_MEMBER, f"not a member of {', '.join(c for (c,) in outside)}"
            )
    key = (report.epoch, report.device_id)
    conn.execute("DELETE FROM reconcile_gaps WHERE epoch = ? AND device_id = ?", key)
    conn.execute(
        "INSERT INTO reconcile_reports (epoch, device_id, user_id, reported_at)"
        " VALUES (?, ?, ?, ?) ON CONFLICT (epoch, device_id) DO UPDATE"
        " SET user_id = excluded.user_id, reported_at = excluded.reported_at",
        (*key, report.user_id, report.reported_at),
    )
    conn.executemany(
        "INSERT INTO reconcile_gaps (epoch, device_id, conversation_id, server_last_seq,"
        " held_last_seq, own, others) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            (*key, g.conversation_id, g.server_last_seq, g.held_last_seq, g.own, g.others)
            for g in report.gaps
        ],
    )


def reports(conn: sqlite3.Connection, epoch: str) -> list[ReconcileReport]:
    """See :meth:`~tidings.core.ports.store.restores.RestoreStore.reconcile_reports`."""
    gaps: dict[str, list[ReconcileGap]] = {}
    for device_id, *fields in conn.execute(
        "SELECT device_id, conversation_id, server_last_seq, held_last_seq, own, others"
        " FROM reconcile_gaps WHERE epoch = ? ORDER BY device_id, conversation_id",
        (epoch,),
    ):
        gaps.setdefault(device_id, []).append(ReconcileGap(*fields))
    return [
        ReconcileReport(epoch, device_id, user_id, reported_at, gaps.get(device_id, []))
        for device_id, user_id, reported_at in conn.execute(
            "SELECT device_id, user_id, reported_at FROM reconcile_reports"
            " WHERE epoch = ? ORDER BY device_id",
            (epoch,),
        )
    ]
