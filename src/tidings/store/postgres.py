"""The PostgreSQL store: several stateless nodes share one database.

Layout of the work:

- **One round trip per statement.** Every write is one statement: either a
  plain ``INSERT``/``UPDATE`` or a call of a PL/pgSQL function from
  ``migrations/postgres_NNN_*.sql`` (``tidings_append_many``,
  ``tidings_change_members``...) that checks and writes inside the
  statement's implicit transaction (appends and cursor moves waiting
  together share one: below). A check and the write it guards are
  therefore atomic, a failing call changes nothing (PostgreSQL rolls the
  statement's transaction back), and asyncpg's statement cache turns each
  call into Bind/Execute of an already prepared statement.
- **Seq allocation.** An append (``tidings_append_item``, migration 003)
  locks the conversation row, then reads membership and the sender's
  cursors, then ``UPDATE conversations SET last_seq = last_seq + 1 ...
  RETURNING last_seq``: the row lock serialises the writers of one
  conversation across all nodes until COMMIT, so seqs are gap-free and
  unique, and membership read *after* the lock is current (a member removed
  a moment ago cannot post after the removal event). Writers of different
  conversations never wait for each other.
- **Duplicates.** A known ``(sender_id, client_msg_id)`` is returned before
  anything is locked. Two identical sends racing past that check both reach
  the INSERT; the unique index makes the second wait for the first and then
  fail with a unique violation, which rolls its transaction back (its seq
  bump included; a batch is then re-sent one append at a time) and
  :meth:`PostgresStore.append` returns the stored copy with
  ``duplicate=True``.
- **Side entries** (edits, deletes, reactions; migration 007). Their target
  is checked after the same conversation lock, so an edit and a delete of
  one target serialise like any two appends, and a delete for everyone
  rewrites the target and its edits in its own transaction. PostgreSQL
  cannot overwrite in place: the old row versions stay in the table's files
  until VACUUM reclaims them (and in WAL and backups until those age out),
  where SQLite's ``secure_delete`` zeroes them at once. A plain text sends
  NULL for the four side columns of a batch and takes no extra statement.

The store version and sync tokens
---------------------------------
``version`` values come from the sequence ``store_version``. A sequence alone
is not a safe sync token: transactions take numbers in one order and commit
in another, so a listing that answered ``current = last_value`` could return
token 12 while version 11 is still uncommitted, and the client would never
see 11. ``list_conversations`` therefore answers the *low-water mark*: the
highest version ``V`` such that every version ``<= V`` is committed or rolled
back, computed without waiting for anyone:

- ``tidings_next_version()`` (every writer) takes ``nextval`` and a
  transaction-level advisory lock keyed by that number, which PostgreSQL
  keeps in shared memory (``pg_locks``) until the transaction ends, *after*
  its commit became visible. A shared session lock on a "gate" key makes
  "nextval + lock" one step as seen from a reader.
- ``tidings_safe_version()`` (every listing) takes the gate exclusively for
  a few microseconds, reads ``last_value`` and the smallest version lock
  still held, and returns ``min(last_value, smallest_in_flight - 1)``.
- The listing's rows are then read in a *later* snapshot, and the token is
  also capped by the highest version visible in that snapshot (so rolled
  back numbers do not move the token when nothing changed).

Any change not in the listing's snapshot has a version above the token, so
no change is ever skipped; a change visible with a version above the token is
simply returned again by the next sync (at-least-once, like any cursor).
Alternatives considered: a single locked counter row (SQLite's design)
serialises every commit of the whole store, fsync included; the xmin of
``pg_current_snapshot()`` with transaction ids as versions is just as cheap
but is held back by *any* transaction of the cluster (other databases,
autovacuum), and transaction ids restart lower after a dump/restore into a
new cluster, while a sequence is dumped with its value. The cost here is
four lock-manager operations per write and one ``pg_locks`` scan per listing.

Cursor moves and appends in batches
-----------------------------------
Every member's ``delivered`` ack is a cursor move, so one message to a group of
1000 makes 1000 moves within milliseconds. Sent one by one, each was a round
trip and a committed transaction (a WAL flush) of its own, and they queued
ahead of the appends for pooled connections and flushes. Appends under load are
the same (docs/benchmarks.md, "Figures behind design choices"). Both are
therefore coalesced without waiting for company
(:class:`~tidings.store.postgres_batches.Batcher`): a call queues, and one
flusher task per kind sends whatever is queued (at most ``CURSOR_BATCH_MAX``
moves or ``APPEND_BATCH_MAX`` appends) as one ``tidings_advance_cursors_many``
or ``tidings_append_many`` statement, i.e. one transaction; calls arriving
while that batch is in flight form the next one. An idle store sends a lone
call at once. Batches of a kind go out one at a time, in the order called, so
appends take seqs in call order (the store contract in ``base.py``). The SQL
functions
lock conversation and member rows in key order (appends are sent sorted by
conversation and sender, each sender's in the order called), so two nodes'
batches cannot deadlock each other on them, and report a non-member per
element instead of raising, so one bad element does not fail the others. A
batch that fails as a whole for an element's sake (an idempotency key another
node is inserting at the same moment) is re-sent one element at a time.

Failures to reach PostgreSQL (refused connections, a terminated backend, a
pool or statement timeout, a server shutting down) raise
``TidingsError(UNAVAILABLE)``; the statement's transaction is then either
rolled back by the server or committed whole, never half, and a client retry
is deduplicated by its ``client_msg_id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal

import asyncpg  # type: ignore[import-untyped]
from msgspec import UNSET, UnsetType

from tidings.core.conversations import new_conversation
from tidings.core.errors import ErrorCode, TidingsError
from tidings.core.ids import new_id, now_ms
from tidings.core.loop import LoopRef
from tidings.core.models import (
    Account,
    AppendResult,
    Change,
    ChangeBatch,
    Conversation,
    ConversationKind,
    ConversationState,
    Credentials,
    CursorState,
    Device,
    HistoryVisibility,
    Member,
    MemberSettings,
    Message,
    NewMessage,
    PurgeResult,
    ReceiptCounts,
    ReconcileReport,
    Restore,
    Role,
    User,
)
from tidings.core.ports.store.announcements import Announcement
from tidings.core.schema import SchemaComponent
from tidings.store import (
    migrator,
    postgres_changes,
    postgres_lock,
    postgres_messaging,
    postgres_restores,
)
from tidings.store.postgres_batches import (
    APPEND_BATCH_MAX,
    CURSOR_BATCH_MAX,
    AppendItem,
    AppendOutcome,
    Batcher,
    BatchStats,
    CursorMove,
    CursorOutcome,
)
from tidings.store.postgres_errors import (
    CLOSE_ERRORS,
    store_closed,
    translate,
)
from tidings.store.postgres_messaging import CONVERSATION_COLUMNS, conversation
from tidings.store.rules import change_batch, mentions_field

__all__ = ["PostgresStore", "migrate"]

log = logging.getLogger(__name__)

URL_PREFIXES = ("postgresql://", "postgres://")

DEFAULT_MIN_SIZE = 2
DEFAULT_MAX_SIZE = 12
"""Pool size per node. Every operation holds a connection for one round trip
(plus its commit's WAL flush), so a few connections per core keep PostgreSQL
busy; more only add context switches and lock contention on a 2-core host.
Measured (1000 appenders, 500 conversations, 2 cores): 12 is at the plateau;
fewer than 8 lose the group-commit effect of concurrent flushes."""

ACQUIRE_TIMEOUT_S = 5.0
"""How long an operation waits for a free pooled connection (or a new one)
before failing as ``UNAVAILABLE``. Far above the wait of a healthy busy pool
(a few ms); below a client's send timeout, so that the client gets a
retryable error rather than silence."""

CONNECT_TIMEOUT_S = 5.0
"""TCP connect + authentication of one new connection; a server that does not
answer in this time is treated as down."""

STATEMENT_TIMEOUT_MS = 5_000
"""Server-side ``statement_timeout``: every operation is one short statement
(an index range or a few row writes), so anything running this long is stuck
behind a lock or an overloaded server; failing it (``UNAVAILABLE``, rolled
back) frees its connection and row locks instead of queueing everyone."""

COMMAND_TIMEOUT_S = STATEMENT_TIMEOUT_MS / 1000 + 2.0
"""Client-side backstop for a statement whose answer never arrives (a network
black hole, where the server-side timeout cannot help)."""

IDLE_IN_TRANSACTION_TIMEOUT_MS = 30_000
"""A connection stuck inside an explicit transaction (only the migrator opens
one) releases its locks after this."""

CLOSE_TIMEOUT_S = 10.0
"""How long ``close`` waits for operations in flight before cutting
connections; they are single statements, so this is generous."""

MIGRATION_LOCK = (29801, 0)
"""Advisory lock key (two-int form; 29801 = 0x7469, "ti") serialising
migrations of nodes that start at the same time. ``(29801, 1)`` is the
version gate used by the SQL functions (see the module docstring)."""

SESSION_CLEANUP = "SELECT pg_advisory_unlock_all()"
"""Run on a connection that an error interrupted: the one session state our
statements take is the version gate's shared session lock, held for a few
µs inside ``tidings_next_version``; a statement cancelled (timeout, client
gone) between taking and releasing it would leave every later listing
waiting on the gate. asyncpg's default pool reset (this plus ``CLOSE ALL``,
``UNLISTEN *`` and ``RESET ALL``, none of which we leave behind) runs after
*every* use: a round trip per store call (its cost is in docs/benchmarks.md,
"Figures behind design choices")."""

APPLICATION_NAME = "tidings"
"""Shown in ``pg_stat_activity``: lets an operator (and the tests) find the
store's connections."""

BATCH_ATTEMPTS = 3
"""Tries of one batch (cursor moves or appends) that PostgreSQL rolled back as
a deadlock or serialization failure. Batches lock conversation and member
rows in key order, so they cannot deadlock each other on those; but a
membership change deleting several member rows locks them in its own order,
and device cursor rows are not locked in one order; the victim batch is
simply run again."""

_ADVANCE_CURSORS_MANY = "SELECT * FROM tidings_advance_cursors_many($1, $2, $3, $4, $5)"
_APPEND_MANY = "SELECT * FROM tidings_append_many($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
_NOT_MEMBER_MESSAGE = "not a member of this conversation"  # as tidings_advance_cursors raises
_ROLLED_BACK: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.SerializationError,
)

_NO_UPPER_BOUND = postgres_messaging.MAX_BIGINT  # "no before_seq"


def _pg_text(value: str) -> bool:
    """Whether PostgreSQL can hold ``value`` as text (no NUL, valid UTF-8):
    an id that cannot be stored names nothing stored, and sent in a batch it
    would fail the whole statement."""
    if value.isascii():
        return "\x00" not in value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in value


def _bigint(seq: int | None) -> int:
    """``seq`` in bigint range; the cursor rules clamp to 0..last_seq anyway,
    so this changes no outcome but keeps an absurd value from failing a batch."""
    return min(max(seq or 0, 0), _NO_UPPER_BOUND)


async def _fetch_retrying_rollbacks(conn: Any, query: str, *args: object) -> list[Any]:
    """``conn.fetch`` of a one-statement transaction, run again (at most
    ``BATCH_ATTEMPTS`` times in all) when PostgreSQL rolled it back as
    a deadlock victim or serialization failure; the last failure propagates."""
    for attempt in range(1, BATCH_ATTEMPTS):
        try:
            return list(await conn.fetch(query, *args))
        except _ROLLED_BACK as exc:
            log.info("batch rolled back (%s), try %d", type(exc).__name__, attempt)
    return list(await conn.fetch(query, *args))


def _cursor_outcome(move: CursorMove, row: Any) -> CursorOutcome:
    """One result row of ``tidings_advance_cursors_many`` as the caller's outcome."""
    if row["not_member"]:
        return TidingsError(ErrorCode.NOT_MEMBER, _NOT_MEMBER_MESSAGE)
    return CursorState(
        move.conversation_id,
        move.user_id,
        int(row["delivered_seq"]),
        int(row["read_seq"]),
        bool(row["moved"]),
    )


_REVOKE_USER_DEVICES = (
    "UPDATE devices SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL"
)
"""Revokes every live token of a user (a disable or a password reset)."""


async def installed_schema_version(url: str) -> int:
    """The newest migration applied to the database at ``url`` (0: no Tidings schema),
    read without creating anything: commands that expect an existing store ask first."""
    try:
        conn = await asyncpg.connect(url, timeout=CONNECT_TIMEOUT_S)
    except Exception as exc:
        raise translate(exc) from exc
    try:
        version = 0
        if await conn.fetchval("SELECT to_regclass('schema_version') IS NOT NULL"):
            version = await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version")
    except Exception as exc:
        raise translate(exc) from exc
    finally:
        await conn.close()
    return int(version)


# -- migrations ----------------------------------------------------------------
DIALECT = migrator.Dialect(
    engine="postgres",
    version_table=(
        "CREATE TABLE IF NOT EXISTS schema_version ("
        " version integer PRIMARY KEY, name text NOT NULL, applied_at bigint NOT NULL)"
    ),
    insert_version="INSERT INTO schema_version (version, name, applied_at) VALUES ($1, $2, $3)",
    component_versions="SELECT version FROM component_schema WHERE component = $1",
    insert_component=(
        "INSERT INTO component_schema (component, version, name, applied_at)"
        " VALUES ($1, $2, $3, $4)"
    ),
    ensure_epoch=(
        "INSERT INTO meta (singleton, epoch) VALUES (1, $1) ON CONFLICT (singleton) DO NOTHING"
    ),
)


async def migrate(conn: Any, components: Sequence[SchemaComponent] = ()) -> str:
    """Bring the schema, then each feature's ``components``, up to date and make
    sure the store has an epoch; return it (:mod:`tidings.store.migrator`).

    One transaction, entered under a transaction-level advisory lock: nodes
    starting together apply each migration once (the others wait, then find
    it recorded), and a failing migration leaves the previous schema intact.
    Each file runs as one multi-statement script (function bodies contain
    semicolons, so it is not split).
    """

    async def execute(step: migrator.Step) -> migrator.Rows:
        if step.script:
            await conn.execute(step.sql)
            return []
        return [tuple(row) for row in await conn.fetch(step.sql, *step.args)]

    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", *MIGRATION_LOCK)
        return await migrator.run_async(migrator.plan(DIALECT, components), execute)


# -- row mapping -------------------------------------------------------------------
_MESSAGE_COLUMNS = "conversation_id, seq, message_id, sender_id, client_msg_id, ts, content"
_CHANGES = (
    f"SELECT version, {_MESSAGE_COLUMNS} FROM messages"
    " WHERE version > $1 AND version <= $2 ORDER BY version LIMIT $3"
)


def _message(row: Any) -> Message:
    return Message(
        str(row["conversation_id"]),
        int(row["seq"]),
        str(row["message_id"]),
        str(row["sender_id"]),
        str(row["client_msg_id"]),
        int(row["ts"]),
        bytes(row["content"]),
    )


def _stored(message: NewMessage, row: Any) -> Message:
    """The stored message an append row describes."""
    return Message(
        str(row["conversation_id"]),
        int(row["seq"]),
        str(row["message_id"]),
        message.sender_id,
        message.client_msg_id,
        int(row["ts"]),
        bytes(row["content"]),
    )


def _appended(message: NewMessage, row: Any) -> AppendResult:
    """The AppendResult of a ``tidings_append``/``tidings_change_members`` row."""
    return AppendResult(_stored(message, row), duplicate=bool(row["duplicate"]))


def _append_outcome(message: NewMessage, row: Any) -> AppendOutcome:
    """One result row of ``tidings_append_many`` as the caller's outcome."""
    outcome = row["outcome"]
    if outcome == "not_member":
        return TidingsError(ErrorCode.NOT_MEMBER, _NOT_MEMBER_MESSAGE)
    if outcome == "no_target":
        return TidingsError(
            ErrorCode.NOT_FOUND, f"no message {message.target} in this conversation"
        )
    if outcome == "target_deleted":
        return TidingsError(ErrorCode.FORBIDDEN, f"message {message.target} was deleted")
    return AppendResult(_stored(message, row), duplicate=outcome == "duplicate")


def _checked_append(message: NewMessage) -> str | None:
    """The stored form of the message's mentions (rules.py), after the checks
    that the database would otherwise fail the whole batch for; raises the
    caller's own error."""
    texts = (message.conversation_id, message.sender_id, message.device_id, message.client_msg_id)
    if not all(_pg_text(text) for text in (*texts, message.kind or "", *message.mentions)):
        raise TidingsError(ErrorCode.BAD_REQUEST, "text PostgreSQL cannot hold (NUL)")
    if message.redacts and message.target is None:
        raise TidingsError(ErrorCode.BAD_REQUEST, "a delete for everyone needs a target")
    if message.target is not None and not 1 <= message.target <= _NO_UPPER_BOUND:
        raise TidingsError(ErrorCode.NOT_FOUND, f"no message {message.target} in this conversation")
    return mentions_field(message.mentions)


def _side_columns(items: Sequence[AppendItem]) -> tuple[list[Any] | None, ...]:
    """The arrays of kinds, targets, redacts flags and mentions of a batch, in
    its order; each None when no element uses it, so that a batch of plain
    texts sends four NULLs rather than four arrays of NULLs."""
    columns = (
        [a.message.kind for a in items],
        [a.message.target for a in items],
        [a.message.redacts for a in items],
        [a.mentions for a in items],
    )
    return tuple(column if any(column) else None for column in columns)


def _is_idempotency_violation(exc: BaseException) -> bool:
    return (
        isinstance(exc, asyncpg.UniqueViolationError)
        and getattr(exc, "constraint_name", None) == "messages_idempotency"
    )


async def _after_clean_use(conn: Any) -> None:
    """The pool's reset after a use that raised nothing: nothing to do (asyncpg
    has already ended any open transaction; see :data:`SESSION_CLEANUP`)."""


async def _clean_session(conn: Any, error: BaseException) -> None:
    """After a use that raised `error`: release what an interrupted statement
    may hold; if the use was cancelled (its statement may still be running) or
    the cleanup fails, drop the connection and let the pool open a fresh one."""
    if isinstance(error, asyncio.CancelledError):
        conn.terminate()
        return
    try:
        await conn.execute(SESSION_CLEANUP)
    except BaseException:
        conn.terminate()
        raise


class PostgresStore:
    """The :class:`~tidings.core.ports.store.composite.Store` on PostgreSQL (asyncpg pool).

    Any number of instances (nodes) may share one database; see the module
    docstring for how seqs, duplicates and sync tokens stay correct then.
    """

    def __init__(
        self,
        url: str,
        *,
        min_size: int = DEFAULT_MIN_SIZE,
        max_size: int = DEFAULT_MAX_SIZE,
        acquire_timeout_s: float = ACQUIRE_TIMEOUT_S,
        statement_timeout_ms: int = STATEMENT_TIMEOUT_MS,
        cursor_batch_max: int = CURSOR_BATCH_MAX,
        append_batch_max: int = APPEND_BATCH_MAX,
        components: Sequence[SchemaComponent] = (),
    ) -> None:
        if not url.startswith(URL_PREFIXES):
            raise ValueError(f"not a postgresql URL: {url!r}")
        if not 0 <= min_size <= max_size or max_size < 1:
            raise ValueError(f"bad pool size: min_size={min_size}, max_size={max_size}")
        self._url = url
        self._components = tuple(components)
        self._min_size = min_size
        self._max_size = max_size
        self._acquire_timeout_s = acquire_timeout_s
        self._statement_timeout_ms = statement_timeout_ms
        self._pool: Any = None
        self._users: Any = None  # holds postgres_lock.USERS_LOCK while the store is open
        self._epoch = ""
        self._mark_in_flight: asyncio.Future[int] | None = None
        self._loop = LoopRef()  # one future per append and per cursor move
        self._cursors = Batcher(self._send_cursor_batch, cursor_batch_max, "cursor")
        self._appends = Batcher(self._send_append_batch, append_batch_max, "append")

    @classmethod
    def from_url(cls, url: str, components: Sequence[SchemaComponent] = ()) -> PostgresStore:
        """Open ``postgresql://user[:password]@host[:port]/database[?options]``."""
        return cls(url, components=components)

    # -- lifecycle -------------------------------------------------------------
    @property
    def epoch(self) -> str:
        return self._epoch

    @property
    def url(self) -> str:
        return self._url

    async def start(self) -> None:
        if self._pool is not None:
            return
        try:
            pool = await asyncpg.create_pool(
                self._url,
                min_size=self._min_size,
                max_size=self._max_size,
                timeout=CONNECT_TIMEOUT_S,
                command_timeout=COMMAND_TIMEOUT_S,
                reset=_after_clean_use,
                server_settings={
                    "application_name": APPLICATION_NAME,
                    "statement_timeout": str(self._statement_timeout_ms),
                    "idle_in_transaction_session_timeout": str(IDLE_IN_TRANSACTION_TIMEOUT_MS),
                },
            )
        except Exception as exc:
            raise translate(exc) from exc
        try:
            async with pool.acquire(timeout=self._acquire_timeout_s) as conn:
                self._epoch = await migrate(conn, self._components)
            self._users = await postgres_lock.hold_shared(self._url, CONNECT_TIMEOUT_S)
        except Exception as exc:
            await self._close_pool(pool)
            raise translate(exc) from exc
        self._pool = pool

    @property
    def cursor_batch_stats(self) -> BatchStats:
        """How many cursor moves were sent in how many batches (statements)."""
        return self._cursors.stats

    @property
    def append_batch_stats(self) -> BatchStats:
        """How many appends were sent in how many batches (statements)."""
        return self._appends.stats

    async def close(self) -> None:
        """Finish (or, after ``CLOSE_TIMEOUT_S``, fail) the queued appends and
        cursor moves, then close the pool."""
        await self._appends.close(CLOSE_TIMEOUT_S)
        await self._cursors.close(CLOSE_TIMEOUT_S)
        pool, self._pool = self._pool, None
        if pool is not None:
            await self._close_pool(pool)
        users, self._users = self._users, None
        if users is not None:
            with contextlib.suppress(*CLOSE_ERRORS):
                await users.close(timeout=CLOSE_TIMEOUT_S)

    @staticmethod
    async def _close_pool(pool: Any) -> None:
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await pool.close()
        except CLOSE_ERRORS:
            pool.terminate()

    async def ping(self) -> None:
        await self._fetchval("SELECT 1")

    # -- restores from backup (postgres_restores.py) ------------------------------
    async def backup_time(self) -> int | None:
        async with self._connection() as conn:
            return await postgres_restores.backup_time(conn)

    async def record_restore(self, backup_ts: int, restored_ts: int) -> Restore:
        epoch = new_id("e")
        async with self._connection() as conn:
            restore = await postgres_restores.record_restore(conn, epoch, backup_ts, restored_ts)
        self._epoch = epoch
        return restore

    async def latest_restore(self) -> Restore | None:
        async with self._connection() as conn:
            return await postgres_restores.latest_restore(conn)

    async def save_reconcile_report(self, report: ReconcileReport) -> None:
        async with self._connection() as conn:
            await postgres_restores.save_report(conn, report)

    async def reconcile_reports(self, epoch: str) -> list[ReconcileReport]:
        async with self._connection() as conn:
            return await postgres_restores.reports(conn, epoch)

    def engine_access(self) -> PostgresEngine:
        return PostgresEngine(self)

    # -- plumbing ----------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        """A pooled connection; driver errors leave as TidingsErrors."""
        pool = self._pool
        if pool is None:
            raise store_closed()
        try:
            async with pool.acquire(timeout=self._acquire_timeout_s) as conn:
                try:
                    yield conn
                except BaseException as error:
                    with contextlib.suppress(Exception):
                        await _clean_session(conn, error)
                    raise
        except TidingsError:
            raise
        except Exception as exc:
            translated = translate(exc)
            if translated is exc:
                raise
            raise translated from exc

    async def _fetchrow(self, query: str, *args: object) -> Any:
        async with self._connection() as conn:
            return await conn.fetchrow(query, *args)

    async def _fetch(self, query: str, *args: object) -> list[Any]:
        async with self._connection() as conn:
            return list(await conn.fetch(query, *args))

    async def _fetchval(self, query: str, *args: object) -> Any:
        async with self._connection() as conn:
            return await conn.fetchval(query, *args)

    async def _execute(self, query: str, *args: object) -> str:
        async with self._connection() as conn:
            return str(await conn.execute(query, *args))

    # -- accounts ----------------------------------------------------------------
    async def create_user(self, username: str, password_hash: str, now: int) -> User:
        user = User(new_id("u"), username, now)
        try:
            await self._execute(
                "INSERT INTO users (user_id, username, password_hash, created_at)"
                " VALUES ($1, $2, $3, $4)",
                user.user_id,
                username,
                password_hash,
                now,
            )
        except asyncpg.UniqueViolationError as exc:
            raise TidingsError(ErrorCode.CONFLICT, "username is taken") from exc
        return user

    async def get_user(self, user_id: str) -> User | None:
        row = await self._fetchrow(
            "SELECT user_id, username, created_at FROM users WHERE user_id = $1", user_id
        )
        return None if row is None else User(row[0], row[1], row[2])

    async def get_credentials(self, username: str) -> Credentials | None:
        row = await self._fetchrow(
            "SELECT user_id, username, created_at, password_hash, disabled_at FROM users"
            " WHERE lower(username) = lower($1)",
            username,
        )
        if row is None:
            return None
        return Credentials(User(row[0], row[1], row[2]), row[3], row[4] is not None)

    async def list_accounts(self, after_username: str = "", limit: int = 100) -> list[Account]:
        # Byte order of the lower-cased name ("C"), as SQLite's NOCASE sorts.
        rows = await self._fetch(
            "SELECT u.user_id, u.username, u.created_at, u.disabled_at,"
            " count(d.device_id) FILTER (WHERE d.revoked_at IS NULL)"
            " FROM users u LEFT JOIN devices d ON d.user_id = u.user_id"
            ' WHERE lower(u.username) COLLATE "C" > lower($1) COLLATE "C"'
            ' GROUP BY u.user_id ORDER BY lower(u.username) COLLATE "C" LIMIT $2',
            after_username,
            limit,
        )
        return [Account(User(r[0], r[1], r[2]), r[3], int(r[4])) for r in rows]

    async def set_disabled(self, user_id: str, disabled: bool, now: int) -> bool:
        async with self._connection() as conn, conn.transaction():
            # The row lock makes a racing create_device (FOR SHARE) finish
            # first; the revocation's own snapshot then sees its device.
            before = await conn.fetchrow(
                "SELECT disabled_at FROM users WHERE user_id = $1 FOR UPDATE", user_id
            )
            if before is None:
                raise TidingsError(ErrorCode.NOT_FOUND, "unknown user")
            await conn.execute(
                "UPDATE users SET disabled_at = $2 WHERE user_id = $1",
                user_id,
                (before[0] or now) if disabled else None,
            )
            if disabled:
                await conn.execute(_REVOKE_USER_DEVICES, user_id, now)
            return (before[0] is None) == disabled

    async def set_password_hash(self, user_id: str, password_hash: str, now: int) -> int:
        async with self._connection() as conn, conn.transaction():
            status = await conn.execute(
                "UPDATE users SET password_hash = $2 WHERE user_id = $1", user_id, password_hash
            )
            if status != "UPDATE 1":
                raise TidingsError(ErrorCode.NOT_FOUND, "unknown user")
            revoked = await conn.execute(_REVOKE_USER_DEVICES, user_id, now)
            return int(revoked.split()[-1])

    async def create_device(self, user_id: str, name: str, token_hash: str, now: int) -> Device:
        device = Device(new_id("d"), user_id, name, now)
        try:
            row = await self._fetchrow(
                "WITH owner AS (SELECT disabled_at FROM users WHERE user_id = $2 FOR SHARE),"
                " added AS (INSERT INTO devices (device_id, user_id, name, token_hash, created_at)"
                " SELECT $1, $2, $3, $4, $5 FROM owner WHERE disabled_at IS NULL RETURNING 1)"
                " SELECT (SELECT count(*) FROM owner), (SELECT count(*) FROM added)",
                device.device_id,
                user_id,
                name,
                token_hash,
                now,
            )
        except asyncpg.UniqueViolationError as exc:
            raise TidingsError(ErrorCode.CONFLICT, "token hash already in use") from exc
        if row[0] == 0:
            raise TidingsError(ErrorCode.NOT_FOUND, "unknown user")
        if row[1] == 0:
            raise TidingsError(ErrorCode.FORBIDDEN, "account is disabled")
        return device

    async def device_for_token(self, token_hash: str) -> Device | None:
        row = await self._fetchrow(
            "SELECT device_id, user_id, name, created_at FROM devices"
            " WHERE token_hash = $1 AND revoked_at IS NULL",
            token_hash,
        )
        return None if row is None else Device(row[0], row[1], row[2], row[3])

    async def revoke_device(self, device_id: str) -> bool:
        status = await self._execute(
            "UPDATE devices SET revoked_at = $1 WHERE device_id = $2 AND revoked_at IS NULL",
            now_ms(),
            device_id,
        )
        return status == "UPDATE 1"

    # -- conversations -------------------------------------------------------------
    async def create_conversation(
        self,
        kind: ConversationKind,
        creator_id: str,
        member_ids: Sequence[str],
        title: str | None,
        now: int,
    ) -> tuple[Conversation, bool]:
        others, direct_key, creator_role = new_conversation(kind, creator_id, member_ids)
        row = await self._fetchrow(
            "SELECT * FROM tidings_create_conversation($1, $2, $3, $4, $5, $6, $7, $8)",
            new_id("c"),
            kind.value,
            title,
            creator_id,
            creator_role.value,
            others,
            now,
            direct_key,
        )
        # Read back whole: tidings_create_conversation keeps the signature of
        # version 1 (nodes of the previous release call it), so its row lacks
        # the settings, which an existing direct conversation may have changed.
        # One more round trip, on creations only.
        stored = await self.get_conversation(str(row["conversation_id"]))
        if stored is None:  # pragma: no cover - conversations are never deleted
            raise TidingsError(ErrorCode.INTERNAL, "the conversation vanished")
        return stored, bool(row["created"])

    async def get_conversation(self, conversation_id: str) -> Conversation | None:
        row = await self._fetchrow(
            f"SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE conversation_id = $1",
            conversation_id,
        )
        return None if row is None else conversation(row)

    async def get_members(self, conversation_id: str) -> list[Member]:
        rows = await self._fetch(
            "SELECT user_id, role, delivered_seq, read_seq, visible_after FROM members"
            " WHERE conversation_id = $1 ORDER BY user_id",
            conversation_id,
        )
        return [Member(r[0], Role(r[1]), int(r[2]), int(r[3]), int(r[4])) for r in rows]

    async def update_conversation(
        self,
        conversation_id: str,
        *,
        title: str | UnsetType = UNSET,
        history: HistoryVisibility | UnsetType = UNSET,
        retention_days: int | UnsetType | None = UNSET,
    ) -> Conversation:
        async with self._connection() as conn:
            return await postgres_messaging.update_conversation(
                conn, conversation_id, title, history, retention_days
            )

    async def update_member_settings(
        self,
        conversation_id: str,
        user_id: str,
        *,
        muted_until: int | UnsetType | None = UNSET,
        archived: bool | UnsetType = UNSET,
        pinned: bool | UnsetType = UNSET,
    ) -> MemberSettings:
        async with self._connection() as conn:
            return await postgres_messaging.update_member_settings(
                conn, conversation_id, user_id, muted_until, archived, pinned
            )

    async def change_members(
        self,
        conversation_id: str,
        add: Sequence[str],
        remove: Sequence[str],
        event: NewMessage,
    ) -> AppendResult | None:
        to_add = list(dict.fromkeys(add))
        to_remove = list(dict.fromkeys(remove))
        if set(to_add) & set(to_remove):
            raise TidingsError(ErrorCode.BAD_REQUEST, "a user cannot be both added and removed")
        if event.conversation_id != conversation_id:
            raise TidingsError(ErrorCode.BAD_REQUEST, "the event belongs to another conversation")
        try:
            row = await self._fetchrow(
                "SELECT * FROM tidings_change_members($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                conversation_id,
                to_add,
                to_remove,
                event.sender_id,
                event.device_id,
                event.client_msg_id,
                event.content,
                event.ts,
                new_id("m"),
            )
        except asyncpg.UniqueViolationError as exc:
            if not _is_idempotency_violation(exc):
                raise
            return await self._stored_duplicate(event, exc)
        return None if row is None else _appended(event, row)

    # -- messages -------------------------------------------------------------------
    async def append(self, message: NewMessage) -> AppendResult:
        """See :class:`~tidings.core.ports.store.messages.MessageLog`. The append
        goes out in the next append batch (module docstring); its result and errors are its own."""
        if self._pool is None:
            raise store_closed()
        mentions = _checked_append(message)
        future: asyncio.Future[AppendResult] = self._loop.get().create_future()
        self._appends.submit(AppendItem(message, new_id("m"), future, mentions))
        try:
            return await future
        except asyncpg.UniqueViolationError as exc:
            # Lost a race with another node's identical send (the batch was
            # re-sent one by one, so this error is this append's own).
            if not _is_idempotency_violation(exc):
                raise
            return await self._stored_duplicate(message, exc)

    async def _send_append_batch(self, items: Sequence[AppendItem]) -> list[AppendOutcome]:
        """One ``tidings_append_many`` statement (one transaction) for ``items``.

        Sent sorted by conversation and sender (stable, so each sender's
        appends keep their order): member rows are then locked in key order,
        as cursor batches lock them, and the two cannot deadlock on them.
        Run again if PostgreSQL chose it as a deadlock victim anyway.
        """
        order = sorted(
            range(len(items)),
            key=lambda i: (items[i].message.conversation_id, items[i].message.sender_id),
        )
        sent = [items[i] for i in order]
        args = (
            [a.message.conversation_id for a in sent],
            [a.message.sender_id for a in sent],
            [a.message.device_id for a in sent],
            [a.message.client_msg_id for a in sent],
            [a.message.content for a in sent],
            [a.message.ts for a in sent],
            [a.message_id for a in sent],
            *_side_columns(sent),
        )
        async with self._connection() as conn:
            rows = await _fetch_retrying_rollbacks(conn, _APPEND_MANY, *args)
        outcomes: dict[int, AppendOutcome] = {}
        for index, item, row in zip(order, sent, rows, strict=True):
            outcomes[index] = _append_outcome(item.message, row)
        return [outcomes[i] for i in range(len(items))]

    async def _stored_duplicate(
        self, message: NewMessage, exc: BaseException | None
    ) -> AppendResult:
        """The stored message for a duplicate key (after a lost race: the winner
        has committed, since the unique index made us wait for it)."""
        stored = await self.find_sent(message.sender_id, message.client_msg_id)
        if stored is None:  # pragma: no cover - the winner cannot vanish
            raise TidingsError(
                ErrorCode.INTERNAL, "duplicate key without a stored message"
            ) from exc
        return AppendResult(stored, duplicate=True)

    async def find_sent(self, sender_id: str, client_msg_id: str) -> Message | None:
        row = await self._fetchrow(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE sender_id = $1 AND client_msg_id = $2",
            sender_id,
            client_msg_id,
        )
        return None if row is None else _message(row)

    async def history(
        self,
        conversation_id: str,
        after_seq: int = 0,
        before_seq: int | None = None,
        limit: int = 100,
        newest_first: bool = False,
        primary_only: bool = False,
    ) -> list[Message]:
        if limit <= 0:
            return []
        upper = _NO_UPPER_BOUND if before_seq is None else before_seq
        order = "DESC" if newest_first else "ASC"
        primary = " AND target_seq IS NULL" if primary_only else ""
        rows = await self._fetch(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages"
            f" WHERE conversation_id = $1 AND seq > $2 AND seq < $3{primary}"
            f" ORDER BY seq {order} LIMIT $4",
            conversation_id,
            after_seq,
            upper,
            limit,
        )
        messages = [_message(row) for row in rows]
        if newest_first:
            messages.reverse()
        return messages

    async def related(self, conversation_id: str, first_seq: int, last_seq: int) -> list[Message]:
        """See :class:`~tidings.core.ports.store.messages.MessageLog` (the
        partial index ``messages_by_target`` holds side entries only)."""
        rows = await self._fetch(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1"
            " AND target_seq >= $2 AND target_seq <= $3 ORDER BY seq",
            conversation_id,
            _bigint(first_seq),
            _bigint(last_seq),
        )
        return [_message(row) for row in rows]

    # -- cursors and listings ---------------------------------------------------------
    async def advance_cursors(
        self,
        conversation_id: str,
        user_id: str,
        device_id: str,
        delivered_seq: int | None,
        read_seq: int | None,
    ) -> CursorState:
        """See :class:`~tidings.core.ports.store.cursors.CursorStore`; ``moved``
        reports the member-level cursors, as in the SQLite store. The move goes
        out in the next cursor batch (module docstring); its result and errors
        are its own."""
        if self._pool is None:
            raise store_closed()
        if not (_pg_text(conversation_id) and _pg_text(user_id) and _pg_text(device_id)):
            raise TidingsError(ErrorCode.NOT_MEMBER, _NOT_MEMBER_MESSAGE)
        future: asyncio.Future[CursorState] = self._loop.get().create_future()
        self._cursors.submit(
            CursorMove(
                conversation_id,
                user_id,
                device_id,
                _bigint(delivered_seq),
                _bigint(read_seq),
                future,
            )
        )
        return await future

    async def _send_cursor_batch(self, moves: Sequence[CursorMove]) -> list[CursorOutcome]:
        """One ``tidings_advance_cursors_many`` statement (one transaction) for
        ``moves``, run again if PostgreSQL chose it as a deadlock victim."""
        args = (
            [m.conversation_id for m in moves],
            [m.user_id for m in moves],
            [m.device_id for m in moves],
            [m.delivered_seq for m in moves],
            [m.read_seq for m in moves],
        )
        async with self._connection() as conn:
            rows = await _fetch_retrying_rollbacks(conn, _ADVANCE_CURSORS_MANY, *args)
        return [_cursor_outcome(move, row) for move, row in zip(moves, rows, strict=True)]

    async def list_conversations(
        self, user_id: str, device_id: str, changed_after: int = 0
    ) -> tuple[list[ConversationState], int]:
        """See :class:`~tidings.core.ports.store.cursors.CursorStore`. The version
        returned is the low-water mark (module docstring): computed *before* the rows are read,
        in a statement of its own, so that the rows' snapshot is later than it."""
        token = await self._low_water_mark()
        async with self._connection() as conn:
            states = await postgres_messaging.list_conversations(
                conn, user_id, device_id, changed_after
            )
        return states, token

    async def _low_water_mark(self) -> int:
        """The sync token floor (module docstring), one computation shared by
        every listing that asks while it runs.

        Sharing is safe: the shared computation completes before any of its
        waiters reads its rows, so their rows' snapshots are still later than
        it, and a mark taken a moment earlier is only more conservative (a
        change it misses is listed again by the next sync). It matters in a
        reconnect herd: every ``hello`` and ``sync`` lists conversations, and
        ``tidings_safe_version()`` takes one cluster-wide lock and scans
        ``pg_locks``, so a few hundred listings at once queued on it, each
        holding a pooled connection, and starved every other query."""
        shared = self._mark_in_flight
        if shared is not None:
            try:
                return await asyncio.shield(shared)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not shared.cancelled() or (task is not None and task.cancelling()):
                    raise
                # The caller computing it was cancelled, not this one: compute anew.
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._mark_in_flight = future
        try:
            # The highest visible version caps the token (rolled-back numbers
            # then leave it alone); read in the same, earlier snapshot as the
            # low-water mark, a lower cap is only more conservative.
            safe, visible_max = await self._fetchrow(
                "SELECT tidings_safe_version(),"
                " (SELECT coalesce(max(version), 0) FROM conversations)"
            )
            mark = max(0, min(int(safe), int(visible_max)))
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved here: waiters, if any, get it too
            raise
        except BaseException:
            future.cancel()
            raise
        finally:
            if self._mark_in_flight is future:
                self._mark_in_flight = None
        future.set_result(mark)
        return mark

    async def receipt_counts(self, conversation_id: str, seq: int) -> ReceiptCounts:
        row = await self._fetchrow(
            "SELECT count(*) FILTER (WHERE delivered_seq >= $2),"
            " count(*) FILTER (WHERE read_seq >= $2), count(*)"
            " FROM members WHERE conversation_id = $1",
            conversation_id,
            seq,
        )
        return ReceiptCounts(conversation_id, seq, int(row[0]), int(row[1]), int(row[2]))

    # -- the change stream and its consumers (postgres_changes.py) ------------------
    async def changes_after(self, position: int, limit: int = 100) -> ChangeBatch:
        """See :class:`~tidings.core.ports.store.messages.MessageLog`. Positions are
        the versions the appends took, which commit out of order; the page stops at the same
        low-water mark as sync tokens, computed before the rows are read (in a
        statement of its own, so the rows' snapshot holds every position up
        to it), so a consumer never resumes past a version still in flight."""
        head = await self._low_water_mark()
        rows: list[Any] = []
        if limit > 0 and head > position:
            rows = await self._fetch(_CHANGES, position, head, limit)
        changes = [Change(int(row["version"]), _message(row)) for row in rows]
        return change_batch(position, limit, changes, head)

    async def consumer_position(self, name: str) -> int:
        async with self._connection() as conn:
            return await postgres_changes.consumer_position(conn, name)

    async def take_consumer_lease(self, name: str, holder: str, lease_ms: int) -> bool:
        async with self._connection() as conn:
            return await postgres_changes.take_lease(conn, name, holder, lease_ms)

    async def save_consumer_position(
        self, name: str, position: int, holder: str, lease_ms: int
    ) -> bool:
        async with self._connection() as conn:
            return await postgres_changes.save_position(conn, name, position, holder, lease_ms)

    async def release_consumer_lease(self, name: str, holder: str) -> None:
        async with self._connection() as conn:
            await postgres_changes.release_lease(conn, name, holder)

    # -- hidden messages and the retention purge (postgres_messaging.py) -------------
    async def set_hidden(
        self, user_id: str, conversation_id: str, seqs: Sequence[int], hidden: bool
    ) -> list[int]:
        async with self._connection() as conn:
            return await postgres_messaging.set_hidden(conn, user_id, conversation_id, seqs, hidden)

    async def hidden_seqs(self, user_id: str, conversation_id: str) -> list[int]:
        async with self._connection() as conn:
            return await postgres_messaging.hidden_seqs(conn, user_id, conversation_id)

    async def purge_expired(self, now: int, default_days: int, max_entries: int) -> PurgeResult:
        async with self._connection() as conn:
            return await postgres_messaging.purge_expired(conn, now, default_days, max_entries)

    # -- announcements (core/ports/store/announcements.py) ---------------------------
    async def announce(self, topic: str, payload: bytes, now: int) -> None:
        await self._execute(
            "INSERT INTO announcements (topic, payload, created_at) VALUES ($1, $2, $3)",
            topic,
            payload,
            now,
        )

    async def announcements_after(self, after_id: int, limit: int) -> list[Announcement]:
        rows = await self._fetch(
            "SELECT id, topic, payload FROM announcements WHERE id > $1 ORDER BY id LIMIT $2",
            after_id,
            limit,
        )
        return [Announcement(int(r["id"]), str(r["topic"]), bytes(r["payload"])) for r in rows]

    async def last_announcement(self) -> int:
        return int(await self._fetchval("SELECT coalesce(max(id), 0) FROM announcements"))

    async def prune_announcements(self, before: int) -> int:
        status = await self._execute("DELETE FROM announcements WHERE created_at < $1", before)
        return int(status.rsplit(" ", 1)[1])


class PostgresEngine:
    """The store's database for features' own backends (``core/ports/store/engine.py``)."""

    def __init__(self, store: PostgresStore) -> None:
        self._store = store

    @property
    def engine(self) -> Literal["postgres"]:
        return "postgres"

    def connection(self) -> contextlib.AbstractAsyncContextManager[Any]:
        return self._store._connection()
