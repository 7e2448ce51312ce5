"""Is this file a Tidings store this code can open? Answered without changing it.

``tidings restore`` asks it of a backup before anything is replaced, and the
admin commands ask it of the data directory so that a mistyped
``--data-dir`` is refused instead of silently becoming a new, empty store.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import NamedTuple

from tidings.store.sqlite import known_schema

SQLITE_MAGIC = b"SQLite format 3\x00"
"""The first 16 bytes of every SQLite 3 database file."""

_TIDINGS_TABLES = frozenset({"schema_version", "meta", "users", "conversations", "messages"})


class NotAStore(Exception):
    """The file is not a Tidings store this version can open; the message says why."""


class StoreInfo(NamedTuple):
    schema_version: int
    epoch: str


def check_sqlite_file(path: Path) -> None:
    """:class:`NotAStore` unless ``path`` is a file that starts as a SQLite
    database does; reads 16 bytes and opens nothing, so no ``-wal`` or
    ``-shm`` file appears beside it."""
    if not path.is_file():
        raise NotAStore(f"{path} does not exist or is not a file")
    with path.open("rb") as fh:
        if fh.read(len(SQLITE_MAGIC)) != SQLITE_MAGIC:
            raise NotAStore(f"{path} is not a SQLite database")


def inspect_store(path: Path, *, integrity: bool = False, name: str = "") -> StoreInfo:
    """The schema version and epoch of the store at ``path``, or :class:`NotAStore`.

    Opens the file read-only. ``integrity`` also runs ``PRAGMA
    integrity_check``, which reads every page (a restore's source, not a
    quick look at the live store). ``name`` is what messages call the file
    (a copy is inspected in the source's name).
    """
    label = name or str(path)
    check_sqlite_file(path)
    try:
        conn = sqlite3.connect(path.absolute().as_uri() + "?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise NotAStore(f"{label} cannot be opened: {exc}") from exc
    try:
        return _inspect(conn, label, integrity)
    except sqlite3.Error as exc:
        raise NotAStore(f"{label} cannot be read as a Tidings store: {exc}") from exc
    finally:
        conn.close()


def _inspect(conn: sqlite3.Connection, path: str, integrity: bool) -> StoreInfo:
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if not tables >= _TIDINGS_TABLES:
        raise NotAStore(f"{path} is a SQLite database but not a Tidings store")
    known = known_schema()
    applied = conn.execute("SELECT version, name FROM schema_version ORDER BY version").fetchall()
    for version, name in applied:
        if known.get(version) != name:
            raise NotAStore(
                f"{path} has schema version {version} ({name}), which this Tidings does not"
                f" know (it knows versions 1-{max(known)}); use the Tidings release that wrote it"
            )
    if integrity:
        problems = [str(row[0]) for row in conn.execute("PRAGMA integrity_check(3)")]
        if problems != ["ok"]:
            found = " ".join(" ".join(problems).split())  # one line
            raise NotAStore(f"{path} fails SQLite's integrity check: {found}")
    row = conn.execute("SELECT epoch FROM meta").fetchone()
    if row is None:
        raise NotAStore(f"{path} is a Tidings store without an epoch (never opened by a server)")
    return StoreInfo(applied[-1][0] if applied else 0, str(row[0]))
