"""The durable outbox: every send is on disk before it is on the wire.

A message the user typed must survive a dropped link, a killed app and a
reboot until the server has acknowledged it. :class:`Outbox` is a SQLite
table keyed by ``client_msg_id``: :meth:`Outbox.add` commits the entry *before*
the first attempt, and only :meth:`Outbox.remove` (on ``ack``) or an explicit
discard by the app deletes it. Because the server stores one
(sender, client_msg_id) at most once, resending an entry any number of times
is safe, and that is what makes "resend whenever in doubt" correct.

An entry's :class:`OutboxStatus`:

- ``pending``: to be sent (again) as soon as the connection allows;
- ``failed``: the configured attempts ran out (no ack in time, repeatedly).
  Kept, not retried automatically: the app decides (retry or discard);
- ``rejected``: the server refused it for good (``not_member``,
  ``too_large``, ``bad_frame``...). Kept until the app discards it.

What is in flight on the current connection, and when, is not persisted: a
new process starts with every ``pending`` entry due at once, which is how a
restart flushes the outbox. The table can share a file with
:class:`~tidings_client.store.MessageStore`; ``":memory:"`` gives a
throw-away outbox (tests, or apps that accept losing unsent messages).
"""

from __future__ import annotations

import enum
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

import msgspec

from tidings_client.frames import Content

# A writer in another connection (the message store on the same file) holds
# the lock for one short transaction at most; 5 s only waits out a slow disk.
SQLITE_BUSY_TIMEOUT_S = 5.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tidings_outbox (
    position INTEGER PRIMARY KEY AUTOINCREMENT,
    client_msg_id TEXT NOT NULL UNIQUE,
    conversation_id TEXT NOT NULL,
    content BLOB NOT NULL,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    deferrals INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT 'pending',
    error_code TEXT,
    error_message TEXT
)
"""


class OutboxStatus(enum.Enum):
    """Where an outbox entry is; see the module docstring."""

    PENDING = "pending"
    FAILED = "failed"
    REJECTED = "rejected"


@dataclass(frozen=True)
class OutboxEntry:
    """One unacknowledged message.

    ``attempts`` counts transmissions that got no ack (timeouts and drops);
    ``deferrals`` counts ``rate_limited`` / ``unavailable`` answers, which are
    bounded separately because the server asked for them.
    """

    client_msg_id: str
    conversation_id: str
    content: Content
    created_at: float
    attempts: int
    deferrals: int
    status: OutboxStatus
    error_code: str | None = None
    error_message: str | None = None


_content_decoder: msgspec.json.Decoder[Content] = msgspec.json.Decoder(Content)
_encoder = msgspec.json.Encoder()


def connect_sqlite(path: str) -> sqlite3.Connection:
    """Open a SQLite database the way the SDK's stores use it.

    WAL lets the outbox and the message store (two connections to one file)
    commit without blocking each other's readers; ``synchronous=NORMAL`` in
    WAL is durable across an app crash (the OS still has the pages), which is
    the failure this store exists for.
    """
    conn = sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_S, isolation_level=None)
    if path != ":memory:":
        conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


class Outbox:
    """The SQLite outbox table; every method commits before it returns."""

    def __init__(self, path: str | sqlite3.Connection) -> None:
        self._conn = connect_sqlite(path) if isinstance(path, str) else path
        self._owns_conn = isinstance(path, str)
        self._conn.execute(_SCHEMA)

    def close(self) -> None:
        if self._owns_conn:
            self._conn.close()

    def add(
        self,
        client_msg_id: str,
        conversation_id: str,
        content: Content,
        *,
        now: float | None = None,
    ) -> OutboxEntry:
        """Persist a new pending entry; adding a known client_msg_id makes it pending again.

        The second case is the epoch resend: a message acknowledged before a
        server restore goes back into the outbox under its original id.
        """
        created = time.time() if now is None else now
        self._conn.execute(
            "INSERT INTO tidings_outbox (client_msg_id, conversation_id, content, created_at)"
            " VALUES (?, ?, ?, ?)"
            " ON CONFLICT (client_msg_id) DO UPDATE SET status = 'pending', attempts = 0,"
            " deferrals = 0, error_code = NULL, error_message = NULL",
            (client_msg_id, conversation_id, _encoder.encode(content), created),
        )
        entry = self.get(client_msg_id)
        assert entry is not None
        return entry

    def get(self, client_msg_id: str) -> OutboxEntry | None:
        row = self._conn.execute(
            f"SELECT {_COLUMNS} FROM tidings_outbox WHERE client_msg_id = ?", (client_msg_id,)
        ).fetchone()
        return _entry(row) if row is not None else None

    def entries(self, status: OutboxStatus | None = None) -> list[OutboxEntry]:
        """Entries in the order they were added (the order they are sent in)."""
        if status is None:
            rows = self._conn.execute(
                f"SELECT {_COLUMNS} FROM tidings_outbox ORDER BY position"
            ).fetchall()
        else:
            rows = self._conn.execute(
                f"SELECT {_COLUMNS} FROM tidings_outbox WHERE status = ? ORDER BY position",
                (status.value,),
            ).fetchall()
        return [_entry(row) for row in rows]

    def __len__(self) -> int:
        (count,) = self._conn.execute("SELECT count(*) FROM tidings_outbox").fetchone()
        return int(count)

    def __contains__(self, client_msg_id: object) -> bool:
        row = self._conn.execute(
            "SELECT 1 FROM tidings_outbox WHERE client_msg_id = ?", (client_msg_id,)
        ).fetchone()
        return row is not None

    def record_attempt(self, client_msg_id: str) -> None:
        """One more transmission went unacknowledged (timeout or drop)."""
        self._conn.execute(
            "UPDATE tidings_outbox SET attempts = attempts + 1 WHERE client_msg_id = ?",
            (client_msg_id,),
        )

    def record_deferral(self, client_msg_id: str) -> None:
        """The server asked to resend later (``rate_limited`` / ``unavailable``)."""
        self._conn.execute(
            "UPDATE tidings_outbox SET deferrals = deferrals + 1 WHERE client_msg_id = ?",
            (client_msg_id,),
        )

    def set_status(
        self,
        client_msg_id: str,
        status: OutboxStatus,
        error_code: str | None = None,
        error_message: str | None = None,
    ) -> None:
        """Move an entry to ``status``; back to ``pending`` also resets its counters."""
        if status is OutboxStatus.PENDING:
            self._conn.execute(
                "UPDATE tidings_outbox SET status = 'pending', attempts = 0, deferrals = 0,"
                " error_code = NULL, error_message = NULL WHERE client_msg_id = ?",
                (client_msg_id,),
            )
        else:
            self._conn.execute(
                "UPDATE tidings_outbox SET status = ?, error_code = ?, error_message = ?"
                " WHERE client_msg_id = ?",
                (status.value, error_code, error_message, client_msg_id),
            )

    def remove(self, client_msg_id: str) -> bool:
        """Delete an entry (acknowledged, or discarded by the app); ``False`` if absent."""
        cursor = self._conn.execute(
            "DELETE FROM tidings_outbox WHERE client_msg_id = ?", (client_msg_id,)
        )
        return cursor.rowcount > 0


_COLUMNS = (
    "client_msg_id, conversation_id, content, created_at, attempts, deferrals, status,"
    " error_code, error_message"
)


def _entry(row: Any) -> OutboxEntry:
    """An entry from a row of ``_COLUMNS`` (sqlite3 rows are untyped)."""
    (cmid, cid, content, created, attempts, deferrals, status, code, message) = row
    return OutboxEntry(
        client_msg_id=str(cmid),
        conversation_id=str(cid),
        content=_content_decoder.decode(content),
        created_at=float(created),
        attempts=int(attempts),
        deferrals=int(deferrals),
        status=OutboxStatus(status),
        error_code=None if code is None else str(code),
        error_message=None if message is None else str(message),
    )
