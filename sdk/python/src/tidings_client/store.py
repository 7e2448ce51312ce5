"""The local message store: what this device holds, across restarts.

:class:`MessageStore` keeps, in SQLite:

- every message surfaced to the app (received, or sent by this client and
  acknowledged), keyed by (conversation_id, seq);
- each conversation's *cursor*: the highest seq up to which the store holds
  every message. Only contiguous runs are stored (messages above a gap wait
  in memory until the gap is filled), so the cursor is always "I hold 1..n"
  and a restarted client resumes with ``sync`` from exactly there;
- the server ``epoch`` seen last, which tells a restore from backup apart
  from ordinary reconnects;
- *unconfirmed* messages: ones this store held that the server lost in a
  restore. They leave the seq-keyed table (the server will reuse those seqs
  for new messages) and stay listed, until the same message (sender,
  client_msg_id) arrives again under a new seq. This user's own come back
  that way (the core resends them under their original client_msg_id);
  other people's only if their senders' devices resend them, so until then
  :meth:`MessageStore.not_on_server` lists them, for the app to show marked
  "not on the server" (the server never rebuilds them from this copy:
  docs/reliability.md, "Disaster recovery");
- the ``reconcile`` report of the last epoch change until the server has
  stored it, so that a restart or a lost connection still sends it, once.

Messages and cursors are written in one transaction, so the cursor never
claims a message the store does not have. The file may be shared with the
:class:`~tidings_client.outbox.Outbox`.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import msgspec

from tidings_client.frames import Content, Message, ReconcileRequest
from tidings_client.outbox import connect_sqlite

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS tidings_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS tidings_cursors ("
    " conversation_id TEXT PRIMARY KEY, seq INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS tidings_messages ("
    " conversation_id TEXT NOT NULL, seq INTEGER NOT NULL, message_id TEXT NOT NULL,"
    " sender_id TEXT NOT NULL, client_msg_id TEXT NOT NULL, ts INTEGER NOT NULL,"
    " content BLOB NOT NULL, PRIMARY KEY (conversation_id, seq))",
    "CREATE TABLE IF NOT EXISTS tidings_unconfirmed ("
    " position INTEGER PRIMARY KEY AUTOINCREMENT, epoch TEXT NOT NULL,"
    " conversation_id TEXT NOT NULL, seq INTEGER NOT NULL, message_id TEXT NOT NULL,"
    " sender_id TEXT NOT NULL, client_msg_id TEXT NOT NULL, ts INTEGER NOT NULL,"
    " content BLOB NOT NULL)",
)

_MESSAGE_COLUMNS = "conversation_id, seq, message_id, sender_id, client_msg_id, ts, content"

_content_decoder: msgspec.json.Decoder[Content] = msgspec.json.Decoder(Content)
_report_decoder: msgspec.json.Decoder[ReconcileRequest] = msgspec.json.Decoder(ReconcileRequest)
_encoder = msgspec.json.Encoder()


class MessageStore:
    """SQLite-backed messages, cursors and epoch; see the module docstring."""

    def __init__(self, path: str | sqlite3.Connection) -> None:
        self._conn = connect_sqlite(path) if isinstance(path, str) else path
        self._owns_conn = isinstance(path, str)
        for statement in _SCHEMA:
            self._conn.execute(statement)

    def close(self) -> None:
        if self._owns_conn:
            self._conn.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    # -- meta ------------------------------------------------------------------------

    def _meta(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM tidings_meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _set_meta(self, key: str, value: str) -> None:
        self._conn.execute(
            "INSERT INTO tidings_meta (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    @property
    def epoch(self) -> str | None:
        """The server epoch this store's messages belong to; ``None`` before the first welcome."""
        return self._meta("epoch")

    def set_epoch(self, epoch: str) -> None:
        self._set_meta("epoch", epoch)

    def finish_epoch_change(self, report: ReconcileRequest) -> None:
        """Store the new epoch (``report.epoch``) with the report still to send,
        atomically: an epoch stored without its report would never be reported."""
        with self._transaction():
            self._set_meta("epoch", report.epoch)
            self._set_meta("reconcile", _encoder.encode(report).decode())

    def pending_reconcile(self) -> ReconcileRequest | None:
        """The report of the last epoch change, until :meth:`reconcile_done`."""
        raw = self._meta("reconcile")
        return None if raw is None else _report_decoder.decode(raw)

    def reconcile_done(self, epoch: str) -> None:
        """The report for ``epoch`` is settled (stored, or refused for good)."""
        pending = self.pending_reconcile()
        if pending is not None and pending.epoch == epoch:
            self._conn.execute("DELETE FROM tidings_meta WHERE key = 'reconcile'")

    @property
    def user_id(self) -> str | None:
        """The user whose messages these are (a store belongs to one account)."""
        return self._meta("user_id")

    def set_user_id(self, user_id: str) -> None:
        self._set_meta("user_id", user_id)

    # -- cursors and messages ------------------------------------------------------

    def cursors(self) -> dict[str, int]:
        """Every known conversation's cursor (``0`` = known, nothing held)."""
        rows = self._conn.execute("SELECT conversation_id, seq FROM tidings_cursors").fetchall()
        return {str(cid): int(seq) for cid, seq in rows}

    def save(self, messages: Sequence[Message], cursors: Mapping[str, int]) -> None:
        """Store messages and move cursors, atomically."""
        with self._transaction() as conn:
            conn.executemany(
                f"INSERT OR REPLACE INTO tidings_messages ({_MESSAGE_COLUMNS})"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [_row(m) for m in messages],
            )
            conn.executemany(
                "INSERT INTO tidings_cursors (conversation_id, seq) VALUES (?, ?)"
                " ON CONFLICT (conversation_id) DO UPDATE SET seq = excluded.seq",
                list(cursors.items()),
            )

    def messages(
        self, conversation_id: str, after_seq: int = 0, limit: int | None = None
    ) -> list[Message]:
        """Stored messages of a conversation in seq order, after ``after_seq``."""
        rows = self._conn.execute(
            f"SELECT {_MESSAGE_COLUMNS} FROM tidings_messages"
            " WHERE conversation_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (conversation_id, after_seq, -1 if limit is None else limit),
        ).fetchall()
        return [_message(row) for row in rows]

    def message(self, conversation_id: str, seq: int) -> Message | None:
        row = self._conn.execute(
            f"SELECT {_MESSAGE_COLUMNS} FROM tidings_messages"
            " WHERE conversation_id = ? AND seq = ?",
            (conversation_id, seq),
        ).fetchone()
        return None if row is None else _message(row)

    # -- restore from backup ------------------------------------------------------------

    def mark_unconfirmed(self, conversation_id: str, from_seq: int, epoch: str) -> list[Message]:
        """Move the messages at ``from_seq`` and above to the unconfirmed list.

        ``epoch`` is the one they were stored under. The cursor drops to
        ``from_seq - 1`` (it never rises here). Returns the moved messages.
        """
        with self._transaction() as conn:
            rows = conn.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM tidings_messages"
                " WHERE conversation_id = ? AND seq >= ? ORDER BY seq",
                (conversation_id, from_seq),
            ).fetchall()
            conn.executemany(
                f"INSERT INTO tidings_unconfirmed (epoch, {_MESSAGE_COLUMNS})"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(epoch, *row) for row in rows],
            )
            conn.execute(
                "DELETE FROM tidings_messages WHERE conversation_id = ? AND seq >= ?",
                (conversation_id, from_seq),
            )
            conn.execute(
                "UPDATE tidings_cursors SET seq = ? WHERE conversation_id = ? AND seq > ?",
                (max(0, from_seq - 1), conversation_id, max(0, from_seq - 1)),
            )
        return [_message(row) for row in rows]

    def unconfirmed(self, conversation_id: str | None = None) -> list[Message]:
        """Messages lost by a server restore and not seen again (yet), oldest
        first: this user's own (resent, until their ack) and others' (see
        :meth:`not_on_server`). Their ``seq`` is the one they had before the restore.
        """
        return self._unconfirmed(conversation_id, others_only=False)

    def not_on_server(self, conversation_id: str | None = None) -> list[Message]:
        """Other people's messages this device holds that the restored server
        lost and nobody has resent (yet), oldest first: show them marked "not
        on the server". A sender's device that still has its copy resends it,
        and it then arrives again under a new seq and leaves this list."""
        return self._unconfirmed(conversation_id, others_only=True)

    def _unconfirmed(self, conversation_id: str | None, *, others_only: bool) -> list[Message]:
        conditions: list[str] = []
        args: list[str] = []
        if conversation_id is not None:
            conditions.append("conversation_id = ?")
            args.append(conversation_id)
        if others_only:
            conditions.append("sender_id != ?")
            args.append(self.user_id or "")
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        rows = self._conn.execute(
            f"SELECT {_MESSAGE_COLUMNS} FROM tidings_unconfirmed {where} ORDER BY position", args
        ).fetchall()
        return [_message(row) for row in rows]

    def confirm(self, conversation_id: str, sender_id: str, client_msg_id: str) -> bool:
        """Drop the unconfirmed copy of a message that arrived again; ``True`` if there was one."""
        cursor = self._conn.execute(
            "DELETE FROM tidings_unconfirmed"
            " WHERE conversation_id = ? AND sender_id = ? AND client_msg_id = ?",
            (conversation_id, sender_id, client_msg_id),
        )
        return cursor.rowcount > 0


def _row(message: Message) -> tuple[object, ...]:
    return (
        message.conversation_id,
        message.seq,
        message.message_id,
        message.sender_id,
        message.client_msg_id,
        message.ts,
        _encoder.encode(message.content),
    )


def _message(row: Any) -> Message:
    """A :class:`Message` from a row of ``_MESSAGE_COLUMNS`` (sqlite3 rows are untyped)."""
    cid, seq, message_id, sender_id, cmid, ts, content = row
    return Message(
        conversation_id=str(cid),
        seq=int(seq),
        message_id=str(message_id),
        sender_id=str(sender_id),
        client_msg_id=str(cmid),
        ts=int(ts),
        content=_content_decoder.decode(content),
    )
