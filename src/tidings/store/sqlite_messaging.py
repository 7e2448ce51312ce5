"""The SQLite store's reads and writes of what people expect of a chat:
conversation and member settings, listings with unread and mention counts,
side entries of a page, hidden messages and the retention purge.

Functions of a connection, run by :class:`~tidings.store.sqlite.SqliteStore`
on its reader pool or as writer jobs; the port docstrings
(``core/ports/store/``) are the contracts.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from msgspec import UnsetType

from tidings.core.errors import ErrorCode, TidingsError
from tidings.core.models import (
    UNREAD_CAP,
    Conversation,
    ConversationKind,
    ConversationState,
    HistoryVisibility,
    MemberSettings,
    Message,
    PurgeResult,
)
from tidings.store.sqlite_append import MESSAGE_COLUMNS, bump_version, json_array, message_from_row

DAY_MS = 86_400_000

_CONVERSATION_COLUMNS = (
    "conversation_id, kind, title, created_by, created_at, last_seq,"
    " history, retention_days, purged_seq"
)


def _conversation(row: Sequence[Any]) -> Conversation:
    cid, kind, title, created_by, created_at, last_seq, history, days, purged = row
    return Conversation(
        cid,
        ConversationKind(kind),
        title,
        created_by,
        created_at,
        last_seq,
        HistoryVisibility(history),
        days,
        purged,
    )


def conversation(conn: sqlite3.Connection, conversation_id: str) -> Conversation | None:
    row = conn.execute(
        f"SELECT {_CONVERSATION_COLUMNS} FROM conversations WHERE conversation_id = ?",
        (conversation_id,),
    ).fetchone()
    return None if row is None else _conversation(row)


def direct_conversation(conn: sqlite3.Connection, direct_key: str) -> Conversation | None:
    row = conn.execute(
        f"SELECT {_CONVERSATION_COLUMNS} FROM conversations WHERE direct_key = ?",
        (direct_key,),
    ).fetchone()
    return None if row is None else _conversation(row)


# Entries a person counts as unread: no side entries, no membership events,
# nothing deleted, nothing of their own; scanned from the first seq they have
# neither read nor lost (purge, later join), at most UNREAD_CAP of them.
_COUNTED = (
    "x.conversation_id = c.conversation_id"
    " AND x.seq > max(m.read_seq, c.purged_seq, m.visible_after)"
    " AND x.target_seq IS NULL AND x.sender_id <> m.user_id"
    " AND (x.kind IS NULL OR x.kind NOT IN ('deleted', 'member_added', 'member_removed'))"
)
_LIST_STATES = (
    "SELECT c.conversation_id, c.kind, c.title, c.last_seq,"
    " coalesce(dc.delivered_seq, 0), m.read_seq, c.version,"
    " max(c.purged_seq, m.visible_after) + 1, m.muted_until, m.archived, m.pinned,"
    " CASE WHEN c.last_seq > m.read_seq THEN (SELECT count(*) FROM"
    f"  (SELECT 1 FROM messages AS x WHERE {_COUNTED} LIMIT {UNREAD_CAP})) ELSE 0 END,"
    " CASE WHEN c.last_seq > m.read_seq THEN (SELECT count(*) FROM"
    f"  (SELECT 1 FROM messages AS x WHERE {_COUNTED} AND x.mentions IS NOT NULL"
    "   AND (instr(x.mentions, ' ' || m.user_id || ' ') > 0 OR instr(x.mentions, ' * ') > 0)"
    f"   LIMIT {UNREAD_CAP})) ELSE 0 END"
    " FROM members AS m"
    " JOIN conversations AS c ON c.conversation_id = m.conversation_id"
    " LEFT JOIN device_cursors AS dc"
    "  ON dc.device_id = ? AND dc.conversation_id = m.conversation_id"
    " WHERE m.user_id = ? AND c.version > ?"
    " ORDER BY c.version"
)


def list_states(
    conn: sqlite3.Connection, user_id: str, device_id: str, changed_after: int
) -> list[ConversationState]:
    rows = conn.execute(_LIST_STATES, (device_id, user_id, changed_after)).fetchall()
    return [
        ConversationState(
            cid,
            ConversationKind(kind),
            title,
            last,
            delivered,
            read,
            unread,
            version,
            mentions,
            start,
            MemberSettings(muted_until, bool(archived), bool(pinned)),
        )
        for (
            cid,
            kind,
            title,
            last,
            delivered,
            read,
            version,
            start,
            muted_until,
            archived,
            pinned,
            unread,
            mentions,
        ) in rows
    ]


def related(
    conn: sqlite3.Connection, conversation_id: str, first_seq: int, last_seq: int
) -> list[Message]:
    rows = conn.execute(
        f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ?"
        " AND target_seq BETWEEN ? AND ? ORDER BY seq",
        (conversation_id, first_seq, last_seq),
    ).fetchall()
    return [message_from_row(row) for row in rows]


def _assignments(fields: dict[str, object]) -> tuple[str, list[object]]:
    """``SET`` clause and values of the fields given (UNSET ones are left out)."""
    given = {name: value for name, value in fields.items() if not isinstance(value, UnsetType)}
    return ", ".join(f"{name} = ?" for name in given), list(given.values())


def update_conversation(
    conn: sqlite3.Connection,
    conversation_id: str,
    title: str | UnsetType,
    history: HistoryVisibility | UnsetType,
    retention_days: int | UnsetType | None,
) -> Conversation:
    """A settings change is a change of the conversation: it takes a store
    version, so its members' next ``sync`` lists the conversation again."""
    history_value = history if isinstance(history, UnsetType) else history.value
    clause, values = _assignments(
        {"title": title, "history": history_value, "retention_days": retention_days}
    )
    if clause:
        conn.execute(
            f"UPDATE conversations SET {clause}, version = ? WHERE conversation_id = ?",
            (*values, bump_version(conn), conversation_id),
        )
    found = conversation(conn, conversation_id)
    if found is None:
        raise TidingsError(ErrorCode.NOT_FOUND, "no such conversation")
    return found


def update_member_settings(
    conn: sqlite3.Connection,
    conversation_id: str,
    user_id: str,
    muted_until: int | UnsetType | None,
    archived: bool | UnsetType,
    pinned: bool | UnsetType,
) -> MemberSettings:
    clause, values = _assignments(
        {"muted_until": muted_until, "archived": archived, "pinned": pinned}
    )
    if clause:
        cursor = conn.execute(
            f"UPDATE members SET {clause} WHERE conversation_id = ? AND user_id = ?",
            (*values, conversation_id, user_id),
        )
        if cursor.rowcount:  # the user's other devices list it at their next sync
            conn.execute(
                "UPDATE conversations SET version = ? WHERE conversation_id = ?",
                (bump_version(conn), conversation_id),
            )
    row = conn.execute(
        "SELECT muted_until, archived, pinned FROM members"
        " WHERE conversation_id = ? AND user_id = ?",
        (conversation_id, user_id),
    ).fetchone()
    if row is None:
        raise TidingsError(ErrorCode.NOT_MEMBER, "you are not a member of this conversation")
    return MemberSettings(row[0], bool(row[1]), bool(row[2]))


def hidden_seqs(conn: sqlite3.Connection, user_id: str, conversation_id: str) -> list[int]:
    rows = conn.execute(
        "SELECT seq FROM hidden_messages WHERE user_id = ? AND conversation_id = ? ORDER BY seq",
        (user_id, conversation_id),
    )
    return [seq for (seq,) in rows]


def set_hidden(
    conn: sqlite3.Connection,
    user_id: str,
    conversation_id: str,
    seqs: Sequence[int],
    hidden: bool,
) -> list[int]:
    if hidden:
        conn.execute(
            "INSERT OR IGNORE INTO hidden_messages (user_id, conversation_id, seq)"
            " SELECT ?, ?, value FROM json_each(?)",
            (user_id, conversation_id, json_array(list(seqs))),
        )
    else:
        conn.execute(
            "DELETE FROM hidden_messages WHERE user_id = ? AND conversation_id = ?"
            " AND seq IN (SELECT value FROM json_each(?))",
            (user_id, conversation_id, json_array(list(seqs))),
        )
    return hidden_seqs(conn, user_id, conversation_id)


# Conversations with a policy whose first entry still held has expired.
_EXPIRED = (
    "SELECT c.conversation_id, c.purged_seq, ? - coalesce(c.retention_days, ?) * ? AS cutoff"
    " FROM conversations AS c"
    " WHERE coalesce(c.retention_days, ?) > 0 AND c.last_seq > c.purged_seq"
    " AND (SELECT x.ts FROM messages AS x WHERE x.conversation_id = c.conversation_id"
    "      AND x.seq = c.purged_seq + 1) < ? - coalesce(c.retention_days, ?) * ?"
    " LIMIT ?"
)


def purge_expired(
    conn: sqlite3.Connection, now: int, default_days: int, max_entries: int
) -> PurgeResult:
    """One writer job: at most ``max_entries`` entries, so the purge never
    holds the write lock for long; the retention worker repeats it."""
    candidates = conn.execute(
        _EXPIRED, (now, default_days, DAY_MS, default_days, now, default_days, DAY_MS, 100)
    ).fetchall()
    purged: dict[str, int] = {}
    budget = max_entries
    for cid, already, cutoff in candidates:
        if budget <= 0:
            break
        upto = already
        for seq, ts in conn.execute(
            "SELECT seq, ts FROM messages WHERE conversation_id = ? AND seq > ?"
            " ORDER BY seq LIMIT ?",
            (cid, already, budget),
        ):
            if ts >= cutoff:
                break
            upto = seq
        if upto == already:
            continue
        conn.execute(
            "DELETE FROM messages WHERE conversation_id = ? AND seq > ? AND seq <= ?",
            (cid, already, upto),
        )
        conn.execute(
            "DELETE FROM hidden_messages WHERE conversation_id = ? AND seq <= ?", (cid, upto)
        )
        conn.execute(
            "UPDATE conversations SET purged_seq = ? WHERE conversation_id = ?", (upto, cid)
        )
        purged[cid] = upto
        budget -= upto - already
    return PurgeResult(purged, max_entries - budget)
