"""The embedded SQLite store: the default backend, one file, no server.

Layout of the work:

- **Writes** go through :class:`~tidings.store.sqlite_writer.SqliteWriter`:
  one connection, many jobs per transaction (group commit), statements on
  the event loop and BEGIN/COMMIT on a thread of its own, an acknowledgement
  only after COMMIT. Each public write method below builds a small function
  of the write connection that checks and writes inside the batch's
  transaction, so a check and the write it guards are atomic without any lock
  in Python; appends go in groups to ``sqlite_append.append_many``.
- **Reads** run on a small pool of read-only connections in their own threads.
  In WAL mode readers see the last committed snapshot and never block the
  writer (nor it them), and ``sqlite3`` releases the GIL while SQLite works,
  so the event loop keeps serving sockets during a long history read. Point
  lookups (token, user, conversation, receipt counts) are the exception: they
  run inline on a loop-owned read connection, because the thread hop costs
  ~30x the lookup (see ``_read_point``).
- **Schema** comes from numbered files ``migrations/sqlite_NNN_name.sql``
  applied in order by :func:`migrate` (the runner both engines share,
  ``migrator.py``), which records each in ``schema_version``.

The store-wide ``version`` lives in the one-row ``meta`` table with the
``epoch``; every append (and every creation of a conversation) bumps it and
stamps the conversation with it, so "what changed since token T" is an
indexed comparison.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, NamedTuple, TypeVar
from urllib.parse import unquote

from msgspec import UNSET, UnsetType

from tidings.core.conversations import new_conversation
from tidings.core.errors import ErrorCode, TidingsError
from tidings.core.ids import new_id, now_ms
from tidings.core.models import (
    Account,
    AppendResult,
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
from tidings.settings import SQLITE_SYNCHRONOUS_MODES
from tidings.store import migrator, sqlite_changes, sqlite_restores
from tidings.store import sqlite_messaging as messaging
from tidings.store.shipped import shipped
from tidings.store.sqlite_append import (
    MESSAGE_COLUMNS,
    LogWrites,
    append_many,
    bump_version,
    json_array,
    message_from_row,
)
from tidings.store.sqlite_cursors import CursorMove, advance_many
from tidings.store.sqlite_lock import StoreLock
from tidings.store.sqlite_scrub import WalScrubber
from tidings.store.sqlite_writer import SqliteWriter, unavailable

__all__ = ["SqliteStore", "migrate"]

T = TypeVar("T")

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 5000
"""How long a connection waits for a lock held by another process (a backup,
an operator's ``sqlite3`` shell) before the operation fails as ``UNAVAILABLE``.
Inside one process there is a single writer, so this only covers outsiders."""

READ_CONNECTIONS = 4
"""Read-only connections (and threads). Reads are short index range scans;
four keep a few slow history pages from queueing the fast lookups behind them
without spending memory on page caches nobody uses."""

SYNCHRONOUS_MODES = frozenset(SQLITE_SYNCHRONOUS_MODES)
"""Accepted ``PRAGMA synchronous`` values (``settings.sqlite_synchronous``)."""

# Measured under the throughput benchmark (strace): with SQLite's default
# 2 MiB page cache the writer re-read about one page per message with pread();
# a larger cache and memory-mapped reads keep hot B-tree pages in memory.
WRITER_CACHE_KIB = 64 * 1024
READER_CACHE_KIB = 16 * 1024
MMAP_BYTES = 256 * 1024 * 1024
# Checkpoint the WAL every ~16 MiB instead of SQLite's 4 MiB: hot pages
# (conversations, cursors) rewritten by many commits are copied back once.
WAL_AUTOCHECKPOINT_PAGES = 4000

URL_PREFIX = "sqlite://"

_NO_UPPER_BOUND = 2**63 - 1  # the largest SQLite integer: "no before_seq"


# -- migrations ----------------------------------------------------------------
DIALECT = migrator.Dialect(
    engine="sqlite",
    version_table=(
        "CREATE TABLE IF NOT EXISTS schema_version ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)"
    ),
    insert_version="INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)",
    component_versions="SELECT version FROM component_schema WHERE component = ?",
    insert_component=(
        "INSERT INTO component_schema (component, version, name, applied_at) VALUES (?, ?, ?, ?)"
    ),
    ensure_epoch=(
        "INSERT INTO meta (singleton, epoch, version) VALUES (1, ?, 0)"
        " ON CONFLICT (singleton) DO NOTHING"
    ),
)


def known_schema() -> dict[int, str]:
    """Version -> migration file name of every schema this code can open."""
    return {version: name for version, name, _ in shipped("tidings.store", "sqlite")}


def _statements(script: str) -> list[str]:
    """Split a migration into statements (``executescript`` would COMMIT our
    transaction first, and the version check must share it)."""
    statements: list[str] = []
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    return statements


def migrate(conn: sqlite3.Connection, components: Sequence[SchemaComponent] = ()) -> str:
    """Bring the schema, then each feature's ``components``, up to date and make
    sure the store has an epoch; return it (:mod:`tidings.store.migrator`).

    Everything happens in one IMMEDIATE transaction, so two processes starting
    on the same file cannot both apply a migration, and a failing migration
    leaves the previous schema intact.
    """

    def execute(step: migrator.Step) -> migrator.Rows:
        if not step.script:
            return conn.execute(step.sql, step.args).fetchall()
        for statement in _statements(step.sql):
            conn.execute(statement)
        return []

    conn.execute("BEGIN IMMEDIATE")
    try:
        epoch = migrator.run(migrator.plan(DIALECT, components), execute)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return epoch


_REVOKE_USER_DEVICES = "UPDATE devices SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL"
"""Revokes every live token of a user (a disable or a password reset)."""


# -- row mapping -----------------------------------------------------------------
_INSERT_MEMBER = (
    "INSERT INTO members (conversation_id, user_id, role, joined_at, visible_after)"
    " VALUES (?, ?, ?, ?, ?)"
)


def _find_duplicate(conn: sqlite3.Connection, sender_id: str, client_msg_id: str) -> Message | None:
    row = conn.execute(
        f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE sender_id = ? AND client_msg_id = ?",
        (sender_id, client_msg_id),
    ).fetchone()
    return None if row is None else message_from_row(row)


def _unknown_users(conn: sqlite3.Connection, user_ids: Sequence[str]) -> list[str]:
    """The ids in ``user_ids`` that name no user (one query, any list length)."""
    if not user_ids:
        return []
    rows = conn.execute(
        "SELECT value FROM json_each(?) WHERE value NOT IN (SELECT user_id FROM users)",
        (json_array(list(user_ids)),),
    ).fetchall()
    return [str(value) for (value,) in rows]


class SenderCursors(NamedTuple):
    """The sender's cursors as read in the append's own membership lookup."""

    delivered: int
    read: int
    device_delivered: int


def _sender_cursors(conn: sqlite3.Connection, message: NewMessage) -> SenderCursors | None:
    row = conn.execute(
        "SELECT m.delivered_seq, m.read_seq, COALESCE(d.delivered_seq, 0) FROM members AS m"
        " LEFT JOIN device_cursors AS d"
        " ON d.device_id = ?1 AND d.conversation_id = m.conversation_id"
        " WHERE m.conversation_id = ?2 AND m.user_id = ?3",
        (message.device_id, message.conversation_id, message.sender_id),
    ).fetchone()
    return None if row is None else SenderCursors(*row)


class SqliteStore:
    """The :class:`~tidings.core.ports.store.composite.Store` on one SQLite file (WAL mode).

    ``synchronous`` is SQLite's ``PRAGMA synchronous``: ``full`` (the default)
    makes every acknowledged write survive power loss; ``normal`` survives a
    crash of the process, not of the machine, for a higher commit rate.
    """

    def __init__(
        self,
        path: str,
        synchronous: str = "full",
        *,
        busy_timeout_ms: int = BUSY_TIMEOUT_MS,
        components: Sequence[SchemaComponent] = (),
    ) -> None:
        mode = synchronous.lower()
        if mode not in SYNCHRONOUS_MODES:
            raise ValueError(
                f"sqlite synchronous must be one of {sorted(SYNCHRONOUS_MODES)},"
                f" got {synchronous!r}"
            )
        if path in ("", ":memory:") or path.startswith("file:"):
            raise ValueError("SqliteStore needs a file path (WAL readers share the file)")
        self._path = Path(path).expanduser().resolve()
        self._synchronous = mode
        self._busy_timeout_ms = int(busy_timeout_ms)
        self._components = tuple(components)
        self._epoch = ""
        self._lock = StoreLock(str(self._path))
        self._writer = SqliteWriter(self._connect_writer)
        self._scrubber = WalScrubber(str(self._path), self._busy_timeout_ms)
        self._readers: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._reader_conns: list[sqlite3.Connection] = []
        self._executor: ThreadPoolExecutor | None = None
        self._inline: sqlite3.Connection | None = None
        self._started = False

    @classmethod
    def from_url(
        cls,
        url: str,
        synchronous: str = "full",
        busy_timeout_ms: int = BUSY_TIMEOUT_MS,
        components: Sequence[SchemaComponent] = (),
    ) -> SqliteStore:
        """Open ``sqlite:///abs/path/tidings.db`` (three slashes: an absolute path)."""
        if not url.startswith(URL_PREFIX):
            raise ValueError(f"not a sqlite URL: {url!r}")
        path = unquote(url[len(URL_PREFIX) :].split("?", 1)[0])
        if not path.startswith("/"):
            raise ValueError(f"sqlite URL needs an absolute path (sqlite:///...): {url!r}")
        return cls(path, synchronous, busy_timeout_ms=busy_timeout_ms, components=components)

    # -- lifecycle -------------------------------------------------------------
    @property
    def epoch(self) -> str:
        return self._epoch

    @property
    def path(self) -> str:
        return str(self._path)

    @property
    def commit_count(self) -> int:
        """Write transactions committed so far (each carries a batch of writes)."""
        return self._writer.commits

    @property
    def write_count(self) -> int:
        """Write operations that went through committed batches."""
        return self._writer.jobs_done

    async def start(self) -> None:
        if self._started:
            return
        try:
            await asyncio.to_thread(self._path.parent.mkdir, parents=True, exist_ok=True)
            self._lock.share()
        except OSError as exc:
            raise unavailable(exc) from exc
        try:
            await self._writer.start(self._init_schema)
        except BaseException:
            self._lock.release()
            raise
        try:
            for _ in range(READ_CONNECTIONS):
                conn = await asyncio.to_thread(self._connect_reader)
                self._reader_conns.append(conn)
                self._readers.put(conn)
        except sqlite3.Error as exc:
            await self.close()
            raise unavailable(exc) from exc
        try:
            self._inline = self._connect_reader(busy_timeout_ms=0, any_thread=False)
        except sqlite3.Error as exc:
            await self.close()
            raise unavailable(exc) from exc
        self._executor = ThreadPoolExecutor(
            max_workers=READ_CONNECTIONS, thread_name_prefix="tidings-sqlite-read"
        )
        self._started = True

    async def close(self) -> None:
        await self._writer.close()
        await self._scrubber.close()
        if self._executor is not None:
            await asyncio.to_thread(self._executor.shutdown, True)
            self._executor = None
        for conn in self._reader_conns:
            conn.close()
        self._reader_conns.clear()
        if self._inline is not None:
            self._inline.close()
            self._inline = None
        self._lock.release()
        self._started = False

    async def ping(self) -> None:
        if not self._writer.alive:
            raise TidingsError(ErrorCode.UNAVAILABLE, "sqlite writer is closed")
        await self._read(lambda conn: conn.execute("SELECT 1").fetchone())

    # -- restores from backup (sqlite_restores.py) -------------------------------
    async def backup_time(self) -> int | None:
        return await self._read(sqlite_restores.backup_time)

    async def record_restore(self, backup_ts: int, restored_ts: int) -> Restore:
        epoch = new_id("e")
        restore = await self._writer.submit(
            "record_restore",
            lambda conn: sqlite_restores.record_restore(conn, epoch, backup_ts, restored_ts),
        )
        self._epoch = epoch
        return restore

    async def latest_restore(self) -> Restore | None:
        return await self._read(sqlite_restores.latest_restore)

    async def save_reconcile_report(self, report: ReconcileReport) -> None:
        await self._writer.submit(
            "save_reconcile_report", lambda conn: sqlite_restores.save_report(conn, report)
        )

    async def reconcile_reports(self, epoch: str) -> list[ReconcileReport]:
        return await self._read(lambda conn: sqlite_restores.reports(conn, epoch))

    async def backup_to(self, target: str) -> int:
        """Write a consistent copy of the live database to ``target``, stamped
        with when it was taken; return that time (ms).

        SQLite's online backup API in one step: it reads one WAL snapshot, so
        the copy is a single point in time while writers go on (a step-wise
        backup would restart whenever another connection writes). The time is
        read before the copy starts, so nothing in the copy is newer than its
        stamp says history may be lost from; the stamp goes into the copy only.
        """
        taken_at = now_ms()

        def copy() -> None:
            source = self._connect_reader(any_thread=True)
            try:
                dest = sqlite3.connect(target)
                try:
                    source.backup(dest)
                    with dest:
                        sqlite_restores.stamp_backup(dest, taken_at)
                finally:
                    dest.close()
            finally:
                source.close()

        await asyncio.to_thread(copy)
        return taken_at

    async def write_pragmas(self) -> dict[str, str | int]:
        """The settings in effect on the write connection (for diagnostics and tests)."""

        def op(conn: sqlite3.Connection) -> dict[str, str | int]:
            names = ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
            return {name: conn.execute(f"PRAGMA {name}").fetchone()[0] for name in names}

        return await self._writer.submit("write_pragmas", op)

    def _init_schema(self, conn: sqlite3.Connection) -> None:
        self._epoch = migrate(conn, self._components)

    def _connect_writer(self) -> sqlite3.Connection:
        # Statements run on the event loop, BEGIN and COMMIT on the writer's
        # own thread (see SqliteWriter): never two at a time.
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        (journal,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
        if str(journal).lower() != "wal":
            conn.close()
            raise sqlite3.OperationalError(f"cannot enable WAL on {self._path} (got {journal})")
        conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
        conn.execute(f"PRAGMA cache_size = -{WRITER_CACHE_KIB}")
        conn.execute(f"PRAGMA mmap_size = {MMAP_BYTES}")
        conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}")
        # A delete for everyone overwrites the bytes it frees (in pages and
        # on the freelist), so deleted text does not linger in the file.
        conn.execute("PRAGMA secure_delete = ON")
        return conn

    def _connect_reader(
        self, busy_timeout_ms: int | None = None, any_thread: bool = True
    ) -> sqlite3.Connection:
        conn = sqlite3.connect(
            f"{self._path.as_uri()}?mode=ro",
            uri=True,
            isolation_level=None,
            # Pool connections are used by whichever pool thread takes them.
            check_same_thread=not any_thread,
        )
        timeout = self._busy_timeout_ms if busy_timeout_ms is None else busy_timeout_ms
        conn.execute(f"PRAGMA busy_timeout = {timeout}")
        conn.execute(f"PRAGMA cache_size = -{READER_CACHE_KIB}")
        conn.execute(f"PRAGMA mmap_size = {MMAP_BYTES}")
        return conn

    def engine_access(self) -> SqliteEngine:
        return SqliteEngine(self)

    # -- plumbing --------------------------------------------------------------
    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._executor is None:
            raise TidingsError(ErrorCode.UNAVAILABLE, "store is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._run_read, fn)

    async def _read_point(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a small indexed lookup on the event loop's own read connection.

        Measured: a point lookup costs ~6 us in SQLite but ~150-200 us when
        handed to a thread and back (and the hop adds GIL handoffs that slow
        the writer). So lookups that touch a handful of pages (token, user,
        conversation, receipt counts) run inline; anything that returns a page
        of rows goes to the pool. The inline connection never waits for a lock
        (busy_timeout 0): if SQLite reports one, the read retries on the pool.
        """
        conn = self._inline
        if conn is None:
            raise TidingsError(ErrorCode.UNAVAILABLE, "store is closed")
        try:
            return fn(conn)
        except sqlite3.OperationalError:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            return await self._read(fn)

    def _run_read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        # The pool holds as many connections as the executor has threads, so
        # a connection is always free here.
        conn = self._readers.get_nowait()
        try:
            return fn(conn)
        except sqlite3.OperationalError as exc:
            raise unavailable(exc) from exc
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._readers.put(conn)

    # -- accounts ----------------------------------------------------------------
    async def create_user(self, username: str, password_hash: str, now: int) -> User:
        user = User(new_id("u"), username, now)

        def op(conn: sqlite3.Connection) -> User:
            try:
                conn.execute(
                    "INSERT INTO users (user_id, username, password_hash, created_at)"
                    " VALUES (?, ?, ?, ?)",
                    (user.user_id, username, password_hash, now),
                )
            except sqlite3.IntegrityError as exc:
                raise TidingsError(ErrorCode.CONFLICT, "username is taken") from exc
            return user

        return await self._writer.submit("create_user", op)

    async def get_user(self, user_id: str) -> User | None:
        def op(conn: sqlite3.Connection) -> User | None:
            row = conn.execute(
                "SELECT user_id, username, created_at FROM users WHERE user_id = ?", (user_id,)
            ).fetchone()
            return None if row is None else User(*row)

        return await self._read_point(op)

    async def get_credentials(self, username: str) -> Credentials | None:
        def op(conn: sqlite3.Connection) -> Credentials | None:
            row = conn.execute(
                "SELECT user_id, username, created_at, password_hash, disabled_at FROM users"
                " WHERE username = ?",
                (username,),
            ).fetchone()
            if row is None:
                return None
            return Credentials(User(row[0], row[1], row[2]), row[3], row[4] is not None)

        return await self._read_point(op)

    async def list_accounts(self, after_username: str = "", limit: int = 100) -> list[Account]:
        def op(conn: sqlite3.Connection) -> list[Account]:
            rows = conn.execute(
                "SELECT u.user_id, u.username, u.created_at, u.disabled_at,"
                " (SELECT count(*) FROM devices d"
                "  WHERE d.user_id = u.user_id AND d.revoked_at IS NULL)"
                " FROM users u WHERE u.username > ? ORDER BY u.username LIMIT ?",
                (after_username, limit),
            ).fetchall()
            return [Account(User(r[0], r[1], r[2]), r[3], r[4]) for r in rows]

        return await self._read(op)

    async def set_disabled(self, user_id: str, disabled: bool, now: int) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                "SELECT disabled_at FROM users WHERE user_id = ?", (user_id,)
            ).fetchone()
            if row is None:
                raise TidingsError(ErrorCode.NOT_FOUND, "unknown user")
            conn.execute(
                "UPDATE users SET disabled_at = ? WHERE user_id = ?",
                ((row[0] or now) if disabled else None, user_id),
            )
            if disabled:
                conn.execute(_REVOKE_USER_DEVICES, (now, user_id))
            return (row[0] is None) == disabled

        return await self._writer.submit("set_disabled", op)

    async def set_password_hash(self, user_id: str, password_hash: str, now: int) -> int:
        def op(conn: sqlite3.Connection) -> int:
            updated = conn.execute(
                "UPDATE users SET password_hash = ? WHERE user_id = ?", (password_hash, user_id)
            )
            if updated.rowcount != 1:
                raise TidingsError(ErrorCode.NOT_FOUND, "unknown user")
            return conn.execute(_REVOKE_USER_DEVICES, (now, user_id)).rowcount

        return await self._writer.submit("set_password_hash", op)

    async def create_device(self, user_id: str, name: str, token_hash: str, now: int) -> Device:
        device = Device(new_id("d"), user_id, name, now)

        def op(conn: sqlite3.Connection) -> Device:
            owner = conn.execute(
                "SELECT disabled_at FROM users WHERE user_id = ?", (user_id,)
            ).fetchone()
            if owner is None:
                raise TidingsError(ErrorCode.NOT_FOUND, "unknown user")
            if owner[0] is not None:
                raise TidingsError(ErrorCode.FORBIDDEN, "account is disabled")
            try:
                conn.execute(
                    "INSERT INTO devices (device_id, user_id, name, token_hash, created_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (device.device_id, user_id, name, token_hash, now),
                )
            except sqlite3.IntegrityError as exc:
                raise TidingsError(ErrorCode.CONFLICT, "token hash already in use") from exc
            return device

        return await self._writer.submit("create_device", op)

    async def device_for_token(self, token_hash: str) -> Device | None:
        def op(conn: sqlite3.Connection) -> Device | None:
            row = conn.execute(
                "SELECT device_id, user_id, name, created_at FROM devices"
                " WHERE token_hash = ? AND revoked_at IS NULL",
                (token_hash,),
            ).fetchone()
            return None if row is None else Device(*row)

        return await self._read_point(op)

    async def revoke_device(self, device_id: str) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "UPDATE devices SET revoked_at = ? WHERE device_id = ? AND revoked_at IS NULL",
                (now_ms(), device_id),
            )
            return cursor.rowcount == 1

        return await self._writer.submit("revoke_device", op)

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
        conversation = Conversation(new_id("c"), kind, title, creator_id, now, 0)

        def op(conn: sqlite3.Connection) -> tuple[Conversation, bool]:
            unknown = _unknown_users(conn, [creator_id, *others])
            if unknown:
                raise TidingsError(ErrorCode.NOT_FOUND, f"unknown users: {', '.join(unknown)}")
            if direct_key is not None:
                found = messaging.direct_conversation(conn, direct_key)
                if found is not None:
                    return found, False
            version = bump_version(conn)
            conn.execute(
                "INSERT INTO conversations (conversation_id, kind, title, created_by,"
                " created_at, last_seq, version, direct_key) VALUES (?, ?, ?, ?, ?, 0, ?, ?)",
                (
                    conversation.conversation_id,
                    kind.value,
                    title,
                    creator_id,
                    now,
                    version,
                    direct_key,
                ),
            )
            conn.executemany(
                _INSERT_MEMBER,
                [(conversation.conversation_id, creator_id, creator_role.value, now, 0)]
                + [
                    (conversation.conversation_id, uid, Role.MEMBER.value, now, 0) for uid in others
                ],
            )
            return conversation, True

        return await self._writer.submit("create_conversation", op)

    async def get_conversation(self, conversation_id: str) -> Conversation | None:
        def op(conn: sqlite3.Connection) -> Conversation | None:
            return messaging.conversation(conn, conversation_id)

        return await self._read_point(op)

    async def get_members(self, conversation_id: str) -> list[Member]:
        def op(conn: sqlite3.Connection) -> list[Member]:
            rows = conn.execute(
                "SELECT user_id, role, delivered_seq, read_seq, visible_after FROM members"
                " WHERE conversation_id = ? ORDER BY user_id",
                (conversation_id,),
            ).fetchall()
            return [Member(uid, Role(role), d, r, v) for uid, role, d, r, v in rows]

        return await self._read(op)

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

        def op(conn: sqlite3.Connection) -> AppendResult | None:
            row = conn.execute(
                "SELECT kind, last_seq, history FROM conversations WHERE conversation_id = ?",
                (conversation_id,),
            ).fetchone()
            if row is None:
                raise TidingsError(ErrorCode.NOT_FOUND, "unknown conversation")
            kind, last_seq, history = row
            visible_after = last_seq if history == HistoryVisibility.JOINED.value else 0
            if kind == ConversationKind.DIRECT.value:
                raise TidingsError(
                    ErrorCode.BAD_REQUEST, "the members of a direct conversation are fixed"
                )
            duplicate = _find_duplicate(conn, event.sender_id, event.client_msg_id)
            if duplicate is not None:
                return AppendResult(duplicate, duplicate=True)
            unknown = _unknown_users(conn, to_add + to_remove)
            if unknown:
                raise TidingsError(ErrorCode.NOT_FOUND, f"unknown users: {', '.join(unknown)}")
            current = {
                uid
                for (uid,) in conn.execute(
                    "SELECT user_id FROM members WHERE conversation_id = ?", (conversation_id,)
                )
            }
            adding = [uid for uid in to_add if uid not in current]
            removing = [uid for uid in to_remove if uid in current]
            if not adding and not removing:
                return None
            conn.executemany(
                _INSERT_MEMBER,
                [
                    (conversation_id, uid, Role.MEMBER.value, event.ts, visible_after)
                    for uid in adding
                ],
            )
            for uid in removing:
                conn.execute(
                    "DELETE FROM members WHERE conversation_id = ? AND user_id = ?",
                    (conversation_id, uid),
                )
                conn.execute(
                    "DELETE FROM device_cursors WHERE conversation_id = ?"
                    " AND device_id IN (SELECT device_id FROM devices WHERE user_id = ?)",
                    (conversation_id, uid),
                )
            log = LogWrites()
            log.conversation(conversation_id, last_seq)
            cursors = _sender_cursors(conn, event)
            if cursors is not None:
                log.sender(conversation_id, event.sender_id, event.device_id, cursors)
            stored = log.add(event)
            log.write(conn)
            return AppendResult(stored, duplicate=False)

        return await self._writer.submit("change_members", op)

    # -- messages -------------------------------------------------------------------
    async def append(self, message: NewMessage) -> AppendResult:
        result = await self._writer.submit_grouped("append", append_many, message)
        if message.redacts and not result.duplicate:
            await self._scrubber.scrub()
        return result

    async def find_sent(self, sender_id: str, client_msg_id: str) -> Message | None:
        return await self._read(lambda conn: _find_duplicate(conn, sender_id, client_msg_id))

    async def related(self, conversation_id: str, first_seq: int, last_seq: int) -> list[Message]:
        return await self._read(
            lambda conn: messaging.related(conn, conversation_id, first_seq, last_seq)
        )

    # -- settings, hidden messages, retention (sqlite_messaging.py) -----------------
    async def update_conversation(
        self,
        conversation_id: str,
        *,
        title: str | UnsetType = UNSET,
        history: HistoryVisibility | UnsetType = UNSET,
        retention_days: int | UnsetType | None = UNSET,
    ) -> Conversation:
        return await self._writer.submit(
            "update_conversation",
            lambda conn: messaging.update_conversation(
                conn, conversation_id, title, history, retention_days
            ),
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
        return await self._writer.submit(
            "update_member_settings",
            lambda conn: messaging.update_member_settings(
                conn, conversation_id, user_id, muted_until, archived, pinned
            ),
        )

    async def set_hidden(
        self, user_id: str, conversation_id: str, seqs: Sequence[int], hidden: bool
    ) -> list[int]:
        return await self._writer.submit(
            "set_hidden",
            lambda conn: messaging.set_hidden(conn, user_id, conversation_id, seqs, hidden),
        )

    async def hidden_seqs(self, user_id: str, conversation_id: str) -> list[int]:
        return await self._read(lambda conn: messaging.hidden_seqs(conn, user_id, conversation_id))

    # -- announcements (core/ports/store/announcements.py) ---------------------------
    async def announce(self, topic: str, payload: bytes, now: int) -> None:
        await self._writer.submit(
            "announce",
            lambda conn: conn.execute(
                "INSERT INTO announcements (topic, payload, created_at) VALUES (?, ?, ?)",
                (topic, payload, now),
            ),
        )

    async def announcements_after(self, after_id: int, limit: int) -> list[Announcement]:
        def op(conn: sqlite3.Connection) -> list[Announcement]:
            rows = conn.execute(
                "SELECT id, topic, payload FROM announcements WHERE id > ? ORDER BY id LIMIT ?",
                (after_id, limit),
            )
            return [Announcement(i, topic, bytes(payload)) for i, topic, payload in rows]

        return await self._read(op)

    async def last_announcement(self) -> int:
        def op(conn: sqlite3.Connection) -> int:
            return int(conn.execute("SELECT coalesce(max(id), 0) FROM announcements").fetchone()[0])

        return await self._read(op)

    async def prune_announcements(self, before: int) -> int:
        def op(conn: sqlite3.Connection) -> int:
            return conn.execute(
                "DELETE FROM announcements WHERE created_at < ?", (before,)
            ).rowcount

        return await self._writer.submit("prune_announcements", op)

    async def purge_expired(self, now: int, default_days: int, max_entries: int) -> PurgeResult:
        result = await self._writer.submit(
            "purge_expired",
            lambda conn: messaging.purge_expired(conn, now, default_days, max_entries),
        )
        if result.entries:
            await self._scrubber.scrub()
        return result

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

        def op(conn: sqlite3.Connection) -> list[Message]:
            rows = conn.execute(
                f"SELECT {MESSAGE_COLUMNS} FROM messages"
                f" WHERE conversation_id = ? AND seq > ? AND seq < ?{primary}"
                f" ORDER BY seq {order} LIMIT ?",
                (conversation_id, after_seq, upper, limit),
            ).fetchall()
            messages = [message_from_row(row) for row in rows]
            if newest_first:
                messages.reverse()
            return messages

        return await self._read(op)

    # -- cursors and listings ---------------------------------------------------------
    async def advance_cursors(
        self,
        conversation_id: str,
        user_id: str,
        device_id: str,
        delivered_seq: int | None,
        read_seq: int | None,
    ) -> CursorState:
        """See :class:`~tidings.core.ports.store.cursors.CursorStore`. ``moved``
        reports the member-level cursors (receipts are per member): a second
        device catching up to where the user already is moves its own cursor
        but reports ``moved=False``."""

        move = CursorMove(conversation_id, user_id, device_id, delivered_seq, read_seq)
        return await self._writer.submit_grouped("advance_cursors", advance_many, move)

    async def list_conversations(
        self, user_id: str, device_id: str, changed_after: int = 0
    ) -> tuple[list[ConversationState], int]:
        def op(conn: sqlite3.Connection) -> tuple[list[ConversationState], int]:
            # One read transaction: the rows and the version are one snapshot,
            # so a sync token never skips a change committed in between.
            conn.execute("BEGIN")
            states = messaging.list_states(conn, user_id, device_id, changed_after)
            (version,) = conn.execute("SELECT version FROM meta").fetchone()
            conn.execute("COMMIT")
            return states, int(version)

        return await self._read(op)

    async def receipt_counts(self, conversation_id: str, seq: int) -> ReceiptCounts:
        def op(conn: sqlite3.Connection) -> ReceiptCounts:
            delivered, read, members = conn.execute(
                "SELECT coalesce(sum(delivered_seq >= ?), 0), coalesce(sum(read_seq >= ?), 0),"
                " count(*) FROM members WHERE conversation_id = ?",
                (seq, seq, conversation_id),
            ).fetchone()
            return ReceiptCounts(conversation_id, seq, delivered, read, members)

        return await self._read_point(op)

    # -- the change stream and its consumers (sqlite_changes.py) -------------------
    async def changes_after(self, position: int, limit: int = 100) -> ChangeBatch:
        return await self._read(lambda conn: sqlite_changes.changes_after(conn, position, limit))

    async def consumer_position(self, name: str) -> int:
        return await self._read_point(lambda conn: sqlite_changes.consumer_position(conn, name))

    async def take_consumer_lease(self, name: str, holder: str, lease_ms: int) -> bool:
        return await self._writer.submit(
            "take_consumer_lease",
            lambda conn: sqlite_changes.take_lease(conn, name, holder, lease_ms),
        )

    async def save_consumer_position(
        self, name: str, position: int, holder: str, lease_ms: int
    ) -> bool:
        return await self._writer.submit(
            "save_consumer_position",
            lambda conn: sqlite_changes.save_position(conn, name, position, holder, lease_ms),
        )

    async def release_consumer_lease(self, name: str, holder: str) -> None:
        await self._writer.submit(
            "release_consumer_lease",
            lambda conn: sqlite_changes.release_lease(conn, name, holder),
        )


class SqliteEngine:
    """The store's database for features' own backends (``core/ports/store/engine.py``)."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store

    @property
    def engine(self) -> Literal["sqlite"]:
        return "sqlite"

    async def write(self, name: str, fn: Callable[[Any], T]) -> T:
        return await self._store._writer.submit(name, fn)

    async def read(self, fn: Callable[[Any], T]) -> T:
        return await self._store._read(fn)
