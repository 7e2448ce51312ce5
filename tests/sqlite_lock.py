"""Another process's hold on a SQLite database, for tests of how the store's
writer waits for (or gives up on) a lock it does not own."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

LOCK_WAIT_S = 10.0
"""Bound on taking the lock (the store's writer may be committing)."""


@contextmanager
def write_lock_held(path: str) -> Iterator[sqlite3.Connection]:
    """Hold the database's write lock, as a backup or an operator's shell
    would, until the block ends or the caller ends the transaction on the
    connection yielded (nothing is written through it)."""
    outsider = sqlite3.connect(path, isolation_level=None, timeout=LOCK_WAIT_S)
    try:
        outsider.execute("BEGIN IMMEDIATE")
        yield outsider
        if outsider.in_transaction:
            outsider.execute("ROLLBACK")
    finally:
        outsider.close()
