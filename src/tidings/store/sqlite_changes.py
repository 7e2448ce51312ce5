"""The change stream and its consumers on SQLite (``Store.changes_after`` and
the consumer leases; docs/architecture.md, "The change log and its workers").

One writer takes versions and commits them in order (``sqlite_append``), so a
reader's snapshot holds every position up to ``meta.version`` and none above
it: a page read in the same snapshot as ``meta.version`` can resume from
there without skipping anything. Lease times come from this process's clock:
every process opening the file runs on the same machine.
"""

from __future__ import annotations

import sqlite3

from tidings.core.ids import now_ms
from tidings.core.models import Change, ChangeBatch
from tidings.store.rules import change_batch
from tidings.store.sqlite_append import MESSAGE_COLUMNS, message_from_row

_CHANGES = (
    f"SELECT version, {MESSAGE_COLUMNS} FROM messages"
    " WHERE version > ? AND version <= ? ORDER BY version LIMIT ?"
)
_TAKE_LEASE = (
    "INSERT INTO change_consumers (name, position, holder, lease_until) VALUES (?1, 0, ?2, ?3)"
    " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, lease_until = excluded.lease_until"
    " WHERE change_consumers.holder = excluded.holder OR change_consumers.lease_until <= ?4"
)
_SAVE_POSITION = (
    "UPDATE change_consumers SET position = max(position, ?2), lease_until = ?3"
    " WHERE name = ?1 AND holder = ?4"
)


def changes_after(conn: sqlite3.Connection, position: int, limit: int) -> ChangeBatch:
    """A page of the change stream, read in one snapshot (a read connection)."""
    conn.execute("BEGIN")
    try:
        (head,) = conn.execute("SELECT version FROM meta").fetchone()
        rows = conn.execute(_CHANGES, (position, head, max(limit, 0))).fetchall()
    finally:
        conn.execute("COMMIT")
    changes = [Change(row[0], message_from_row(row[1:])) for row in rows]
    return change_batch(position, limit, changes, int(head))


def consumer_position(conn: sqlite3.Connection, name: str) -> int:
    row = conn.execute("SELECT position FROM change_consumers WHERE name = ?", (name,)).fetchone()
    return 0 if row is None else int(row[0])


def take_lease(conn: sqlite3.Connection, name: str, holder: str, lease_ms: int) -> bool:
    """Take or renew the lease (a write connection)."""
    now = now_ms()
    return conn.execute(_TAKE_LEASE, (name, holder, now + lease_ms, now)).rowcount == 1


def save_position(
    conn: sqlite3.Connection, name: str, position: int, holder: str, lease_ms: int
) -> bool:
    """Save the position and renew the lease if ``holder`` holds it (a write connection)."""
    params = (name, position, now_ms() + lease_ms, holder)
    return conn.execute(_SAVE_POSITION, params).rowcount == 1


def release_lease(conn: sqlite3.Connection, name: str, holder: str) -> None:
    conn.execute(
        "UPDATE change_consumers SET lease_until = 0 WHERE name = ? AND holder = ?", (name, holder)
    )
