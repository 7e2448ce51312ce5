"""The embedded engine: SQLite FTS5 in files of its own beside the store.

Each generation is one SQLite file ``<index_dir>/<name>.db``; the file
``LIVE`` names the live one and is replaced by a rename, so a rebuild (in
the server or in ``tidings search reindex``) fills a new file beside the
live one and swaps with one rename. The index never writes the store's
file: it has a writer of its own (one thread), so indexing never holds the
store's single writer (docs/architecture.md, "Search"). Queries attach the
store read-only (WAL readers do not block its writer) and join its
``members`` and ``conversations`` in the same statement.

``entries`` holds each indexed message (original text for snippets, folded
``body`` for the match); ``entries_fts`` is an external-content FTS5 index
over ``body`` kept in step by triggers. The files are disposable: written
with ``synchronous = NORMAL``, and anything that reads as damaged raises
:class:`IndexCorrupt`, on which the keeper rebuilds from the store.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from tidings.features.search import sql
from tidings.features.search.port import (
    Edit,
    Generation,
    GenerationGone,
    Hit,
    IndexCorrupt,
    Op,
    Put,
    Remove,
    Search,
)
from tidings.features.search.text import fold

T = TypeVar("T")
FORMAT = 2
"""The files' layout; a generation of another format is rebuilt."""
LIVE = "LIVE"
READERS = 4
"""Threads answering queries (each with its own connections; SQLite releases
the GIL while it works, so more than the cores overlap waits for the disk)."""
MMAP_BYTES = 1 << 30
CACHE_KIB = 32 * 1024
"""Each connection maps up to 1 GiB of its index and caches 32 MiB of pages:
a query over a large index then reads pages from memory, not by a system
call each (SQLite's default cache is 2 MiB)."""
MAX_SCOPED = 1000
"""Conversations a query names in its MATCH at most (see :func:`fts_match`);
a member of more is searched without that narrowing (slower for common words)."""
SCHEMA = f"""
CREATE TABLE meta (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    format    INTEGER NOT NULL,
    position  INTEGER NOT NULL
);
INSERT INTO meta VALUES (1, {FORMAT}, 0);
CREATE TABLE entries (
    id              INTEGER PRIMARY KEY,
    conversation_id TEXT    NOT NULL,
    seq             INTEGER NOT NULL,
    sender_id       TEXT    NOT NULL,
    ts              INTEGER NOT NULL,
    text            TEXT    NOT NULL,
    body            TEXT    NOT NULL,
    scope           TEXT    NOT NULL,
    UNIQUE (conversation_id, seq)
);
CREATE INDEX entries_by_ts ON entries (ts);
CREATE VIRTUAL TABLE entries_fts USING fts5(
    body, scope, content = 'entries', content_rowid = 'id',
    tokenize = 'porter unicode61 remove_diacritics 2'
);
CREATE TRIGGER entries_added AFTER INSERT ON entries BEGIN
    INSERT INTO entries_fts (rowid, body, scope) VALUES (new.id, new.body, new.scope);
END;
CREATE TRIGGER entries_removed AFTER DELETE ON entries BEGIN
    INSERT INTO entries_fts (entries_fts, rowid, body, scope)
        VALUES ('delete', old.id, old.body, old.scope);
END;
CREATE TRIGGER entries_changed AFTER UPDATE OF body, scope ON entries BEGIN
    INSERT INTO entries_fts (entries_fts, rowid, body, scope)
        VALUES ('delete', old.id, old.body, old.scope);
    INSERT INTO entries_fts (rowid, body, scope) VALUES (new.id, new.body, new.scope);
END;
"""

_PUT = (
    "INSERT INTO entries (conversation_id, seq, sender_id, ts, text, body, scope)"
    " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (conversation_id, seq) DO UPDATE SET"
    " sender_id = excluded.sender_id, ts = excluded.ts, text = excluded.text,"
    " body = excluded.body"
)
_EDIT = "UPDATE entries SET text = ?, body = ? WHERE conversation_id = ? AND seq = ?"
_REMOVE = "DELETE FROM entries WHERE conversation_id = ? AND seq = ?"

DIALECT = sql.Dialect(
    placeholder=lambda _: "?",
    like="LIKE",
    members="store.members",
    conversations="store.conversations",
    messages="store.messages",
    text_of="json_extract(CAST(e.content AS TEXT), '$.text')",
    kind_of="coalesce(json_extract(CAST(e.content AS TEXT), '$.kind'), 'text')",
)


def _phrase(term: str) -> str:
    """A term as an FTS5 phrase (``query.parse`` leaves no ``"`` in a term)."""
    return f'"{fold(term)}"'


def scope_of(conversation_id: str) -> str:
    """A conversation as one token of the ``scope`` column (ids are ASCII)."""
    return "s" + "".join(c for c in conversation_id.lower() if c.isalnum())


def fts_match(
    terms: Sequence[str], excluded: Sequence[str], conversations: Sequence[str] | None
) -> str:
    """FTS5 query syntax: every term as a phrase in ``body``, AND-ed, then the
    exclusions; and, given ``conversations``, only entries of those.

    The narrowing is what makes a common word cheap: FTS5 intersects the
    word's long posting list with the few entries of the searcher's
    conversations instead of ranking every match of the word, and the
    membership join then only confirms (access is still decided there)."""
    words = " AND ".join(_phrase(term) for term in terms)
    words = "".join([words, *(f" NOT {_phrase(term)}" for term in excluded)])
    if conversations is None:
        return f"{{body}} : ({words})"
    scopes = " OR ".join(f'"{scope_of(cid)}"' for cid in conversations)
    return f"{{body}} : ({words}) AND scope : ({scopes})"


def _damaged(exc: sqlite3.DatabaseError) -> bool:
    """Whether ``exc`` says the file is not a readable index (rather than busy)."""
    if not isinstance(exc, sqlite3.OperationalError):
        return True
    message = str(exc)
    return any(s in message for s in ("no such table", "malformed", "not a database"))


@contextmanager
def _as_index_errors() -> Iterator[None]:
    try:
        yield
    except sqlite3.DatabaseError as exc:
        if _damaged(exc):
            raise IndexCorrupt(str(exc)) from exc
        raise


def _uri(path: Path, mode: str) -> str:
    return f"file:{quote(str(path))}?mode={mode}"


class SqliteSearchIndex:
    """The :class:`~tidings.features.search.port.SearchIndex` of a SQLite store."""

    def __init__(self, store_path: str, directory: str) -> None:
        self._store = Path(store_path)
        self._dir = Path(directory)
        self._writer: ThreadPoolExecutor | None = None
        self._readers: ThreadPoolExecutor | None = None
        self._writing: dict[str, sqlite3.Connection] = {}
        """Connections of the writer thread, by generation name."""
        self._local = threading.local()

    # -- threads and connections ------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(self._dir.mkdir, parents=True, exist_ok=True)
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="tidings-search-writer")
        self._readers = ThreadPoolExecutor(READERS, thread_name_prefix="tidings-search-reader")

    async def close(self) -> None:
        if self._writer is not None:
            await self._write(self._close_all)
            self._writer.shutdown()
        if self._readers is not None:
            self._readers.shutdown()

    def _close_all(self) -> None:
        for conn in self._writing.values():
            conn.close()
        self._writing.clear()

    async def _write(self, fn: Callable[[], T]) -> T:
        assert self._writer is not None, "start() first"
        return await asyncio.get_running_loop().run_in_executor(self._writer, fn)

    async def _read(self, fn: Callable[[], T]) -> T:
        assert self._readers is not None, "start() first"
        return await asyncio.get_running_loop().run_in_executor(self._readers, fn)

    def _path(self, name: str) -> Path:
        return self._dir / f"{name}.db"

    def _connect(self, name: str, mode: str = "rw") -> sqlite3.Connection:
        path = self._path(name)
        if not path.exists():
            raise GenerationGone(name)
        conn = sqlite3.connect(_uri(path, mode), uri=True, check_same_thread=False)
        try:
            with _as_index_errors():
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
                conn.execute(f"PRAGMA mmap_size = {MMAP_BYTES}")
                conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
                conn.execute("ATTACH DATABASE ? AS store", (_uri(self._store, "ro"),))
                (fmt,) = conn.execute("SELECT format FROM meta").fetchone()
            if fmt != FORMAT:
                raise IndexCorrupt(f"{path} has format {fmt}, not {FORMAT}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _writing_conn(self, name: str) -> sqlite3.Connection:
        conn = self._writing.get(name)
        if conn is None:
            conn = self._writing[name] = self._connect(name)
            # A removed entry's text is zeroed in the file, not left in a free page.
            conn.execute("PRAGMA secure_delete = ON")
        return conn

    @staticmethod
    def _scrub(conn: sqlite3.Connection) -> None:
        """Take removed entries out of the WAL too (as the store does after a
        delete): copy it into the database file and truncate it. ``main``
        only: the store, attached read-only, is the store's to checkpoint. A
        reader in the middle of a query can keep old frames until the next scrub."""
        conn.execute("PRAGMA main.wal_checkpoint(TRUNCATE)").fetchone()

    def _reading_conn(self, name: str) -> sqlite3.Connection:
        """This reader thread's connection to generation ``name`` (one at a time)."""
        held: tuple[str, sqlite3.Connection] | None = getattr(self._local, "index", None)
        if held is not None and held[0] == name:
            return held[1]
        if held is not None:
            held[1].close()
            self._local.index = None
        conn = self._connect(name)
        conn.execute("PRAGMA query_only = ON")
        self._local.index = (name, conn)
        return conn

    def _store_conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "store", None)
        if conn is None:
            conn = sqlite3.connect("file::memory:", uri=True, check_same_thread=False)
            conn.execute("ATTACH DATABASE ? AS store", (_uri(self._store, "ro"),))
            self._local.store = conn
        return conn

    # -- generations ------------------------------------------------------------

    def _live_name(self) -> str | None:
        try:
            name = (self._dir / LIVE).read_text().strip()
        except FileNotFoundError:
            return None
        return name if name and self._path(name).exists() else None

    async def live(self) -> Generation | None:
        name = self._live_name()
        if name is None:
            return None

        def read() -> Generation:
            with _as_index_errors():
                conn = self._reading_conn(name)
                (position,) = conn.execute("SELECT position FROM meta").fetchone()
            return Generation(name, position)

        try:
            return await self._read(read)
        except GenerationGone:
            return None

    async def check(self, generation: Generation) -> None:
        def check() -> None:
            conn = self._connect(generation.name, "ro")
            try:
                with _as_index_errors():
                    rows = conn.execute("PRAGMA quick_check").fetchall()
                    conn.execute("SELECT count(*) FROM entries_fts").fetchone()
            finally:
                conn.close()
            if rows != [("ok",)]:
                raise IndexCorrupt(f"{generation.name}: {rows[:3]}")

        await self._read(check)

    async def create(self) -> Generation:
        name = f"gen-{time.time_ns()}"

        def create() -> None:
            path = self._path(name)
            conn = sqlite3.connect(path)
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.executescript(SCHEMA)
            finally:
                conn.close()

        await self._write(create)
        return Generation(name, 0)

    async def apply(self, generation: Generation, ops: Sequence[Op], position: int) -> Generation:
        def apply() -> None:
            conn = self._writing_conn(generation.name)
            with _as_index_errors():
                with conn:
                    for kind, run in itertools.groupby(ops, type):
                        conn.executemany(_STATEMENTS[kind], map(_ROWS[kind], run))
                    conn.execute("UPDATE meta SET position = max(position, ?)", (position,))
                if any(type(op) is Remove for op in ops):
                    self._scrub(conn)

        await self._write(apply)
        return Generation(generation.name, position)

    async def promote(self, generation: Generation) -> None:
        def promote() -> None:
            old = self._live_name()
            pointer = self._dir / LIVE
            spare = self._dir / f"{LIVE}.new"
            with open(spare, "w") as fh:
                fh.write(generation.name)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(spare, pointer)
            _sync_dir(self._dir)
            if old is not None and old != generation.name:
                self._drop(old)

        await self._write(promote)

    async def discard(self, generation: Generation) -> None:
        await self._write(lambda: self._drop(generation.name))

    def _drop(self, name: str) -> None:
        conn = self._writing.pop(name, None)
        if conn is not None:
            conn.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self._path(name)}{suffix}").unlink(missing_ok=True)

    async def expire(self, generation: Generation, before_ts: int) -> int:
        def expire() -> int:
            conn = self._writing_conn(generation.name)
            with _as_index_errors():
                with conn:
                    removed: int = conn.execute(
                        "DELETE FROM entries WHERE id IN (SELECT e.id FROM store.conversations c"
                        " JOIN entries e ON e.conversation_id = c.conversation_id"
                        " AND e.seq <= c.purged_seq WHERE c.purged_seq > 0) OR ts < ?",
                        (before_ts,),
                    ).rowcount
                if removed:
                    self._scrub(conn)
            return removed

        return await self._write(expire)

    # -- queries ----------------------------------------------------------------

    async def search(self, generation: Generation, search: Search) -> list[Hit]:
        query = search.query

        def run() -> list[Hit]:
            with _as_index_errors():
                conn = self._reading_conn(generation.name)
                mine = [
                    cid
                    for (cid,) in conn.execute(
                        "SELECT conversation_id FROM store.members WHERE user_id = ?",
                        (search.user_id,),
                    )
                    if query.conversation_id in (None, cid)
                ]
                if not mine:
                    return []
                scoped = mine if len(mine) <= MAX_SCOPED else None
                match = fts_match(query.terms, query.excluded, scoped)
                st = sql.index_page(
                    DIALECT,
                    search,
                    "entries_fts JOIN entries e ON e.id = entries_fts.rowid",
                    lambda s: f"entries_fts MATCH {s.arg(match)}",
                    lambda _: f"bm25(entries_fts, 1.0, 0.0) - e.ts / {float(sql.RECENCY_MS)}",
                )
                return [Hit(*row) for row in conn.execute(st.text, st.args)]

        return await self._read(run)

    async def scan(self, search: Search) -> list[Hit]:
        st = sql.store_page(DIALECT, search)

        def run() -> list[Hit]:
            return [Hit(*row) for row in self._store_conn().execute(st.text, st.args)]

        return await self._read(run)


def _sync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_STATEMENTS: dict[type, str] = {Put: _PUT, Edit: _EDIT, Remove: _REMOVE}
_ROWS: dict[type, Callable[[Any], tuple[Any, ...]]] = {
    Put: lambda op: (
        op.conversation_id,
        op.seq,
        op.sender_id,
        op.ts,
        op.text,
        fold(op.text),
        scope_of(op.conversation_id),
    ),
    Edit: lambda op: (op.text, fold(op.text), op.conversation_id, op.seq),
    Remove: lambda op: (op.conversation_id, op.seq),
}
