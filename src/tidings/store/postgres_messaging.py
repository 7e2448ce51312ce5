"""The PostgreSQL side of messaging (migration ``postgres_007``): conversation
and member settings, listings with unread and mention counts, each user's
hidden messages and the retention purge. Coroutines of an asyncpg connection,
which :class:`~tidings.store.postgres.PostgresStore` takes from its pool; the
appends themselves (targets, redaction, mentions) go through its batches and
``tidings_append_many``.

Settings changes bump the conversation's ``version`` (a listing's sync
token), so that the members' other devices see them in their next
incremental listing. The purge does not: a listing carries the new
``history_start`` with the conversation's next change, and a device that
already holds the purged entries loses nothing by learning it later, while
a bump would make every member of every purged conversation list it again
after each sweep.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from msgspec import UNSET, UnsetType

from tidings.core.errors import ErrorCode, TidingsError
from tidings.core.models import (
    UNREAD_CAP,
    Conversation,
    ConversationKind,
    ConversationState,
    HistoryVisibility,
    MemberSettings,
    PurgeResult,
)

MAX_BIGINT = 2**63 - 1

CONVERSATION_COLUMNS = (
    "conversation_id, kind, title, created_by, created_at, last_seq,"
    " history, retention_days, purged_seq"
)

# What a member is told is unread: the entries after both their read cursor
# and the start of what they may read, that others sent and a person sees
# (no side entries, no membership events, nothing deleted), at most
# UNREAD_CAP of them ($4) through the primary key; the scan is skipped
# altogether (a one-time filter) when the member has read to the end.
# Mentions are matched as " <id> " in the space-padded field (rules.py).
LIST_CONVERSATIONS = (
    "SELECT c.conversation_id, c.kind, c.title, c.last_seq,"
    " coalesce(dc.delivered_seq, 0) AS delivered_seq, m.read_seq, c.version,"
    " greatest(c.purged_seq, m.visible_after) + 1 AS history_start,"
    " m.muted_until, m.archived, m.pinned, n.unread, n.mentions"
    " FROM members AS m"
    " JOIN conversations AS c ON c.conversation_id = m.conversation_id"
    " LEFT JOIN device_cursors AS dc"
    "  ON dc.device_id = $2 AND dc.conversation_id = m.conversation_id"
    " CROSS JOIN LATERAL ("
    "  SELECT count(*) AS unread, count(*) FILTER ("
    "    WHERE strpos(e.mentions, ' ' || $1 || ' ') > 0 OR strpos(e.mentions, ' * ') > 0"
    "  ) AS mentions"
    "  FROM (SELECT x.mentions FROM messages AS x"
    "   WHERE c.last_seq > m.read_seq AND x.conversation_id = c.conversation_id"
    "    AND x.seq > greatest(m.read_seq, c.purged_seq, m.visible_after)"
    "    AND x.target_seq IS NULL AND x.sender_id <> $1"
    "    AND (x.kind IS NULL OR x.kind NOT IN ('deleted', 'member_added', 'member_removed'))"
    "   LIMIT $4) AS e"
    " ) AS n"
    " WHERE m.user_id = $1 AND c.version > $3"
    " ORDER BY c.version"
)


def conversation(row: Any) -> Conversation:
    """A row of :data:`CONVERSATION_COLUMNS`."""
    return Conversation(
        str(row["conversation_id"]),
        ConversationKind(row["kind"]),
        row["title"],
        str(row["created_by"]),
        int(row["created_at"]),
        int(row["last_seq"]),
        HistoryVisibility(row["history"]),
        None if row["retention_days"] is None else int(row["retention_days"]),
        int(row["purged_seq"]),
    )


async def list_conversations(
    conn: Any, user_id: str, device_id: str, changed_after: int
) -> list[ConversationState]:
    """The rows of ``CursorStore.list_conversations`` (the token is the caller's)."""
    rows = await conn.fetch(LIST_CONVERSATIONS, user_id, device_id, changed_after, UNREAD_CAP)
    return [
        ConversationState(
            str(r["conversation_id"]),
            ConversationKind(r["kind"]),
            r["title"],
            int(r["last_seq"]),
            int(r["delivered_seq"]),
            int(r["read_seq"]),
            int(r["unread"]),
            int(r["version"]),
            int(r["mentions"]),
            int(r["history_start"]),
            _settings(r),
        )
        for r in rows
    ]


def _settings(row: Any) -> MemberSettings:
    muted_until = row["muted_until"]
    return MemberSettings(
        None if muted_until is None else int(muted_until),
        bool(row["archived"]),
        bool(row["pinned"]),
    )


def _assignments(fields: dict[str, object], first: int) -> tuple[str, list[object]]:
    """``col = $n, ...`` for the fields given (not UNSET), numbered from
    ``first``, and their values. The column names are this module's own."""
    given = [(name, value) for name, value in fields.items() if value is not UNSET]
    sql = ", ".join(f"{name} = ${first + i}" for i, (name, _) in enumerate(given))
    return sql, [value for _, value in given]


async def update_conversation(
    conn: Any,
    conversation_id: str,
    title: str | UnsetType,
    history: HistoryVisibility | UnsetType,
    retention_days: int | UnsetType | None,
) -> Conversation:
    """See ``ConversationStore.update_conversation``. A change bumps the
    conversation's version, as an append does, so that the members' next
    incremental listing carries the new title."""
    history_value: str | UnsetType = UNSET
    if not isinstance(history, UnsetType):
        try:
            history_value = HistoryVisibility(history).value
        except ValueError as exc:
            raise TidingsError(ErrorCode.BAD_REQUEST, f"bad history: {history!r}") from exc
    if isinstance(retention_days, int) and not 0 <= retention_days <= 2**31 - 1:
        raise TidingsError(ErrorCode.BAD_REQUEST, f"bad retention_days: {retention_days}")
    sets, values = _assignments(
        {"title": title, "history": history_value, "retention_days": retention_days}, first=2
    )
    if sets:
        row = await conn.fetchrow(
            f"UPDATE conversations SET {sets}, version = tidings_next_version()"
            f" WHERE conversation_id = $1 RETURNING {CONVERSATION_COLUMNS}",
            conversation_id,
            *values,
        )
    else:
        row = await conn.fetchrow(
            f"SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE conversation_id = $1",
            conversation_id,
        )
    if row is None:
        raise TidingsError(ErrorCode.NOT_FOUND, "unknown conversation")
    return conversation(row)


async def update_member_settings(
    conn: Any,
    conversation_id: str,
    user_id: str,
    muted_until: int | UnsetType | None,
    archived: bool | UnsetType,
    pinned: bool | UnsetType,
) -> MemberSettings:
    """See ``ConversationStore.update_member_settings``: one UPDATE of the
    given columns only, so two devices changing different fields at once
    both take effect. It bumps the conversation's version (the user's other
    devices learn of it from their next incremental listing), and takes the
    conversation row first, as appends do (they lock it, then the sender's
    member row), so that the two cannot deadlock."""
    if isinstance(muted_until, int) and not -1 <= muted_until <= MAX_BIGINT:
        raise TidingsError(ErrorCode.BAD_REQUEST, f"bad muted_until: {muted_until}")
    sets, values = _assignments(
        {"muted_until": muted_until, "archived": archived, "pinned": pinned}, first=3
    )
    async with conn.transaction():
        if sets:
            await conn.execute(
                "UPDATE conversations SET version = tidings_next_version()"
                " WHERE conversation_id = $1",
                conversation_id,
            )
            row = await conn.fetchrow(
                f"UPDATE members SET {sets} WHERE conversation_id = $1 AND user_id = $2"
                " RETURNING muted_until, archived, pinned",
                conversation_id,
                user_id,
                *values,
            )
        else:
            row = await conn.fetchrow(
                "SELECT muted_until, archived, pinned FROM members"
                " WHERE conversation_id = $1 AND user_id = $2",
                conversation_id,
                user_id,
            )
        if row is None:  # the transaction rolls the version bump back
            raise TidingsError(ErrorCode.NOT_MEMBER, "not a member of this conversation")
    return _settings(row)


_HIDE = (
    "WITH added AS (INSERT INTO hidden_messages (user_id, conversation_id, seq)"
    "  SELECT $1, $2, s FROM unnest($3::bigint[]) AS s ON CONFLICT DO NOTHING)"
    " SELECT seq FROM hidden_messages WHERE user_id = $1 AND conversation_id = $2"
    " UNION SELECT unnest($3::bigint[]) ORDER BY 1"
)
"""Hide and list in one statement: the final SELECT runs in the statement's
snapshot, which does not see the rows the CTE inserts, so it adds the seqs
given (each is hidden once this commits)."""
_UNHIDE = (
    "WITH removed AS (DELETE FROM hidden_messages"
    "  WHERE user_id = $1 AND conversation_id = $2 AND seq = ANY ($3::bigint[]))"
    " SELECT seq FROM hidden_messages WHERE user_id = $1 AND conversation_id = $2"
    "  AND seq <> ALL ($3::bigint[]) ORDER BY seq"
)
"""Unhide and list in one statement (the same snapshot rule as :data:`_HIDE`)."""


async def set_hidden(
    conn: Any, user_id: str, conversation_id: str, seqs: Sequence[int], hidden: bool
) -> list[int]:
    """See ``HiddenStore.set_hidden``."""
    wanted = sorted(set(seqs))
    if wanted and not 1 <= wanted[0] <= wanted[-1] <= MAX_BIGINT:
        raise TidingsError(ErrorCode.BAD_REQUEST, "a seq is out of range")
    rows = await conn.fetch(_HIDE if hidden else _UNHIDE, user_id, conversation_id, wanted)
    return [int(r[0]) for r in rows]


async def hidden_seqs(conn: Any, user_id: str, conversation_id: str) -> list[int]:
    """See ``HiddenStore.hidden_seqs``."""
    rows = await conn.fetch(
        "SELECT seq FROM hidden_messages WHERE user_id = $1 AND conversation_id = $2 ORDER BY seq",
        user_id,
        conversation_id,
    )
    return [int(r[0]) for r in rows]


async def purge_expired(conn: Any, now: int, default_days: int, max_entries: int) -> PurgeResult:
    """See ``RetentionStore.purge_expired``: one call of
    ``tidings_purge_expired`` (migration 007), one transaction."""
    if default_days < 0:
        raise TidingsError(ErrorCode.BAD_REQUEST, f"bad default_days: {default_days}")
    if max_entries <= 0:
        return PurgeResult({}, 0)
    rows = await conn.fetch(
        "SELECT * FROM tidings_purge_expired($1, $2, $3)",
        now,
        min(default_days, 2**31 - 1),
        min(max_entries, MAX_BIGINT),
    )
    return PurgeResult(
        {str(r["conversation_id"]): int(r["purged_seq"]) for r in rows},
        sum(int(r["entries"]) for r in rows),
    )
