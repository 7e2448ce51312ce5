"""Who is using a SQLite store: a shared lock for users, an exclusive one for a restore.

Every process that opens the store (a server, an admin command) holds a
shared ``flock`` on ``<database>.lock`` for as long as it has the store
open; ``tidings restore`` takes it exclusively, so it refuses to replace a
database that a running server would go on using from its open file (the
server would keep writing to the replaced file, and what it wrote would be
gone at its next start). The lock lives in a file of its own because the
restore swaps the database file itself, and a lock on a file that is
renamed away protects nothing. ``flock`` locks are released by the kernel
when the process dies, so a crashed server never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os

from tidings.core.errors import ErrorCode, TidingsError

LOCK_SUFFIX = ".lock"


class StoreLock:
    """One process's hold on a SQLite store's lock file."""

    def __init__(self, database_path: str) -> None:
        self.path = database_path + LOCK_SUFFIX
        self._fd: int | None = None

    def share(self) -> None:
        """Hold the lock shared (many servers and admin commands at once), or
        fail at once with ``UNAVAILABLE`` while a restore replaces the store."""
        if not self._take(fcntl.LOCK_SH):
            raise TidingsError(
                ErrorCode.UNAVAILABLE,
                f"the store is being restored ({self.path} is held by `tidings restore`)",
                retry_after_ms=1000,
            )

    def take_exclusive(self) -> bool:
        """Hold the lock alone; False (holding nothing) while anyone else uses the store."""
        return self._take(fcntl.LOCK_EX)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def _take(self, mode: int) -> bool:
        self.release()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return True
