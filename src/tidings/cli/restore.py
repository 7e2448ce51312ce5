"""``tidings restore``: put a backup in place without any way to lose the live store.

Order matters more than anything here, so the steps are named functions
run in this order (a test kills the process after each one):

1. **Check** the source before touching anything: it exists, is a SQLite
   file, and (step 3) is a Tidings store of a known schema that passes
   SQLite's integrity check.
2. **Lock**: the exclusive lock on ``<db>.lock`` that every server and admin
   command holds shared (``store/sqlite_lock.py``), so a running server is
   refused instead of keeping its open, replaced file.
3. :func:`stage` copies the source beside the live file, then checks the copy.
4. :func:`stamp_epoch` migrates the copy and gives it its new epoch, so the
   store clients will see after the swap is complete before the swap.
5. :func:`keep_replaced` writes a dated, self-contained copy of the live store
   (WAL included) beside it; it stays until the operator removes it.
6. :func:`checkpoint_live` moves the live WAL into the live file, so no WAL
   frame of the old database can be replayed onto the new one.
7. :func:`swap` renames the staged copy over the live file: one ``rename``,
   so a crash leaves the old store or the new one, never neither.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from tidings.cli.errors import OperatorError
from tidings.cli.locations import require_existing
from tidings.core.models import Restore
from tidings.ops.restores import mark_restored
from tidings.settings import Settings
from tidings.store.sqlite import SqliteStore
from tidings.store.sqlite_inspect import NotAStore, check_sqlite_file, inspect_store
from tidings.store.sqlite_lock import LOCK_SUFFIX, StoreLock

STAGED_SUFFIX = ".restoring"
REPLACED_SUFFIX = ".replaced-"
SIDE_FILES = ("-wal", "-shm", "-journal")
"""Files SQLite keeps beside a database."""


@dataclass(frozen=True)
class Plan:
    live: Path
    source: Path
    staged: Path
    replaced: Path


@dataclass(frozen=True)
class Outcome:
    restore: Restore
    replaced_copy: str


def plan(settings: Settings, live: Path, source: str) -> Plan:
    """Check the source's name and first bytes; refuse before anything is touched."""
    require_existing(settings)
    path = Path(source).expanduser().absolute()
    try:
        check_sqlite_file(path)
    except NotAStore as exc:
        raise OperatorError(f"cannot restore from {source}: {exc}; nothing was changed") from exc
    if path.resolve() == live.resolve():
        raise OperatorError(f"{source} is the live store itself; nothing was changed")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return Plan(
        live=live,
        source=path,
        staged=live.with_name(live.name + STAGED_SUFFIX),
        replaced=live.with_name(live.name + REPLACED_SUFFIX + stamp),
    )


def exclusive_lock(live: Path) -> StoreLock:
    lock = StoreLock(str(live))
    if not lock.take_exclusive():
        raise OperatorError(
            f"the store {live} is in use by a running `tidings serve` (or another tidings"
            " command); stop it first; nothing was changed"
        )
    return lock


async def restore_file(settings: Settings, live: Path, source: str) -> Outcome:
    """Replace the SQLite store at ``live`` with the backup ``source``."""
    steps = plan(settings, live, source)
    if steps.replaced.exists():
        raise OperatorError(f"{steps.replaced} exists; wait a second and run again")
    lock = exclusive_lock(live)
    try:
        try:
            stage(steps)
            restore = await stamp_epoch(settings, steps)
            keep_replaced(steps)
            checkpoint_live(steps)
        except NotAStore as exc:
            raise OperatorError(f"cannot restore: {exc}; nothing was changed") from exc
        swap(steps)
    finally:
        _remove(steps.staged)
        lock.release()
    return Outcome(restore, str(steps.replaced))


def stage(steps: Plan) -> None:
    """Copy the source (and its WAL, if it has one) beside the live file, then check the copy."""
    _remove(steps.staged)
    shutil.copyfile(steps.source, steps.staged)
    wal = Path(str(steps.source) + "-wal")
    if wal.is_file() and wal.stat().st_size > 0:
        shutil.copyfile(wal, str(steps.staged) + "-wal")
    inspect_store(steps.staged, integrity=True, name=str(steps.source))


async def stamp_epoch(settings: Settings, steps: Plan) -> Restore:
    """Bring the staged copy to this version's schema, give it a new epoch and
    record the restore (the window clients are told may be lost); leave it one
    self-contained file (no WAL) ready to be renamed into place."""
    store = SqliteStore(str(steps.staged), settings.sqlite_synchronous)
    await store.start()
    try:
        restore = await mark_restored(store)
    finally:
        await store.close()
    _self_contained(steps.staged)
    _remove_lock_file(steps.staged)
    return restore


def _remove_lock_file(database: Path) -> None:
    Path(str(database) + LOCK_SUFFIX).unlink(missing_ok=True)


def keep_replaced(steps: Plan) -> None:
    """A dated copy of the live store, WAL included, as one file beside it."""
    source = sqlite3.connect(steps.live)
    try:
        target = sqlite3.connect(steps.replaced)
        try:
            source.backup(target)
        finally:
            target.close()
    finally:
        source.close()
    _self_contained(steps.replaced)


def checkpoint_live(steps: Plan) -> None:
    """Empty the live WAL into the live file (nobody else has it open: we hold the lock)."""
    conn = sqlite3.connect(steps.live)
    try:
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    finally:
        conn.close()
    wal = Path(str(steps.live) + "-wal")
    if busy or (wal.exists() and wal.stat().st_size > 0):
        raise OperatorError(
            f"could not checkpoint {steps.live} (another process has it open); the store"
            f" was not replaced; the dated copy {steps.replaced} can be removed"
        )


def swap(steps: Plan) -> None:
    """One atomic rename puts the new store in place; then the old side files go."""
    os.replace(steps.staged, steps.live)
    _fsync_dir(steps.live.parent)
    for suffix in SIDE_FILES:
        Path(str(steps.live) + suffix).unlink(missing_ok=True)


def _self_contained(path: Path) -> None:
    """Fold the WAL into the file and leave WAL mode, so the file alone is the
    database, then make it durable."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA journal_mode=DELETE")
    finally:
        conn.close()
    for suffix in SIDE_FILES:
        Path(str(path) + suffix).unlink(missing_ok=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    for name in (str(path), *(str(path) + suffix for suffix in SIDE_FILES)):
        with contextlib.suppress(FileNotFoundError):
            os.remove(name)
