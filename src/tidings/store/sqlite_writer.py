"""The single writer of the SQLite store: one thread, one connection, group commit.

SQLite allows one writer at a time, and with ``synchronous=full`` each COMMIT
costs an fsync (about a millisecond or more). Letting every coroutine open its
own write transaction would serialise on the database lock and pay one fsync
per message. Instead, every write is a *job* (a function of the write
connection) put on a queue; one dedicated thread takes every job waiting, up to
:data:`MAX_BATCH_OPS`, and runs them in ONE transaction, where a job that
raises (``not_member``, ``conflict``...) undoes only itself: jobs check before
they write, so a failing one has usually written nothing, and a batch where one
failed half-way is replayed with a SAVEPOINT around each job (``_run_job``
explains why savepoints are not the default). One COMMIT then makes the whole
batch durable, and only after it succeeded are the callers' futures resolved:
an acknowledged write is durable.
If the COMMIT fails, every job of the batch fails with ``UNAVAILABLE`` (nothing
of it was stored, so a client retry is safe).

While one batch commits, new jobs pile up in the queue and form the next
batch: under load the number of fsyncs per second stays roughly constant while
the number of writes per commit grows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from tidings.core.errors import ErrorCode, TidingsError

T = TypeVar("T")

log = logging.getLogger(__name__)

MAX_BATCH_OPS = 256
"""Most jobs in one transaction. Large enough to amortise an fsync over a burst
of sends; small enough that one batch holds the write lock for only a few
milliseconds, so readers' WAL never grows without bound and the first caller of
a batch does not wait behind thousands of others."""

JOIN_TIMEOUT_S = 30.0
"""How long ``close`` waits for the writer to finish the jobs already queued.
A full queue of batches commits in well under this; beyond it the disk is
stuck and waiting longer would only hang shutdown."""


def unavailable(exc: BaseException) -> TidingsError:
    """The retryable error clients get when the database cannot be written or read."""
    return TidingsError(ErrorCode.UNAVAILABLE, f"store unavailable: {exc}", retry_after_ms=1000)


class _Work(Protocol):
    """What the writer thread sees of a job, whatever its result type."""

    name: str
    loop: asyncio.AbstractEventLoop
    error: BaseException | None

    def execute(self, conn: sqlite3.Connection) -> None: ...

    def reset(self) -> None: ...

    def settle(self) -> None: ...


class _Job(Generic[T]):
    """One queued write: the function to run and the caller's future.

    The outcome is recorded by the writer thread and copied into the future on
    the caller's event loop (futures are not thread-safe).
    """

    __slots__ = ("error", "fn", "future", "loop", "name", "result")

    def __init__(
        self,
        name: str,
        fn: Callable[[sqlite3.Connection], T],
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[T],
    ) -> None:
        self.name = name
        self.fn = fn
        self.loop = loop
        self.future = future
        self.result: tuple[T] | None = None  # boxed: T itself may be None
        self.error: BaseException | None = None

    def execute(self, conn: sqlite3.Connection) -> None:
        self.result = (self.fn(conn),)

    def reset(self) -> None:
        """Forget the outcome of an attempt whose transaction was rolled back."""
        self.result = None
        self.error = None

    def settle(self) -> None:
        """Resolve the future (on its loop); a caller that gave up is skipped."""
        if self.future.done():
            return
        if self.error is not None:
            self.future.set_exception(self.error)
        elif self.result is not None:
            self.future.set_result(self.result[0])
        else:  # pragma: no cover - the writer always records one outcome
            self.future.set_exception(RuntimeError(f"write {self.name!r} never ran"))


class _PartialWrite(Exception):
    """A job raised after some of its writes: only a savepoint can undo just it."""


def _record_failure(job: _Work, exc: Exception) -> None:
    """Keep a job's error for its caller; database errors become ``UNAVAILABLE``."""
    if isinstance(exc, sqlite3.OperationalError):
        job.error = unavailable(exc)
        return
    if not isinstance(exc, TidingsError):
        log.exception("sqlite write %r failed", job.name, exc_info=exc)
    job.error = exc


class _Stop:
    """Queue sentinel: finish what is queued before it, then exit."""


def _settle_all(jobs: list[_Work]) -> None:
    for job in jobs:
        job.settle()


class SqliteWriter:
    """Owns the write connection and the thread that runs batched transactions."""

    def __init__(self, connect: Callable[[], sqlite3.Connection]) -> None:
        self._connect = connect
        self._queue: queue.SimpleQueue[_Work | _Stop] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self.commits = 0
        """Transactions committed (a batch is one); tests and metrics read it."""
        self.jobs_done = 0
        """Jobs that ran in a committed transaction, failed or not."""

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._closed

    async def start(self, init: Callable[[sqlite3.Connection], None]) -> None:
        """Start the thread, open the connection and run ``init`` (migrations) on it."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._run, args=(init,), name="tidings-sqlite-writer", daemon=True
        )
        self._thread.start()
        await asyncio.to_thread(self._ready.wait)
        if self._startup_error is not None:
            self._closed = True
            raise self._startup_error

    async def submit(self, name: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in the next batch; return once its transaction has committed.

        ``fn`` runs on the writer thread inside a SAVEPOINT; if it raises, its
        changes are rolled back and the exception is raised here. If the caller
        is cancelled the job still runs (it may already be committed): a retry
        by the client is deduplicated by the idempotency keys.
        """
        if self._closed or self._thread is None:
            raise TidingsError(ErrorCode.UNAVAILABLE, "store is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        job = _Job(name, fn, loop, future)
        self._queue.put(job)
        return await future

    async def close(self) -> None:
        """Let queued jobs finish, then stop the thread (which closes the connection)."""
        if self._thread is None or self._closed:
            self._closed = True
            return
        self._closed = True
        self._queue.put(_Stop())
        await asyncio.to_thread(self._thread.join, JOIN_TIMEOUT_S)
        if self._thread.is_alive():
            log.error("sqlite writer did not stop within %ss", JOIN_TIMEOUT_S)

    # -- the writer thread ---------------------------------------------------
    def _run(self, init: Callable[[sqlite3.Connection], None]) -> None:
        try:
            conn = self._connect()
            init(conn)
        except BaseException as exc:
            self._startup_error = unavailable(exc) if isinstance(exc, sqlite3.Error) else exc
            self._ready.set()
            return
        self._ready.set()
        try:
            stopping = False
            while not stopping:
                batch: list[_Work] = []
                item = self._queue.get()
                while True:
                    if isinstance(item, _Stop):
                        stopping = True
                        break
                    batch.append(item)
                    if len(batch) >= MAX_BATCH_OPS:
                        break
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                if batch:
                    self._run_batch(conn, batch)
        finally:
            conn.close()
            self._fail_leftovers()

    def _fail_leftovers(self) -> None:
        """Jobs that raced ``close`` (queued after the sentinel) fail retryably."""
        leftovers: list[_Work] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if not isinstance(item, _Stop):
                item.error = TidingsError(ErrorCode.UNAVAILABLE, "store is closed")
                leftovers.append(item)
        self._settle(leftovers)

    def _run_batch(self, conn: sqlite3.Connection, batch: list[_Work]) -> None:
        try:
            try:
                self._attempt(conn, batch, savepoints=False)
            except _PartialWrite:
                # Rare: a job failed half-way through its writes. Undo the
                # whole attempt and replay the batch with one savepoint per job.
                conn.execute("ROLLBACK")
                self._attempt(conn, batch, savepoints=True)
            conn.execute("COMMIT")
            self.commits += 1
        except sqlite3.Error as exc:
            # BEGIN, COMMIT or a rollback failed, or a job's error aborted the
            # transaction: nothing of the batch is stored, so every job fails
            # retryably, including the ones whose own work had succeeded.
            log.warning("sqlite batch of %d jobs failed: %s", len(batch), exc)
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    log.exception("sqlite rollback failed")
            for job in batch:
                job.reset()
                job.error = unavailable(exc)
        self.jobs_done += len(batch)
        self._settle(batch)

    @classmethod
    def _attempt(cls, conn: sqlite3.Connection, batch: list[_Work], *, savepoints: bool) -> None:
        conn.execute("BEGIN IMMEDIATE")
        for job in batch:
            job.reset()
            if savepoints:
                cls._run_job_in_savepoint(conn, job)
            else:
                cls._run_job(conn, job)

    @staticmethod
    def _run_job(conn: sqlite3.Connection, job: _Work) -> None:
        """Run one job without a savepoint; a failure before any write is recorded.

        Most jobs check first and write after (membership, duplicates...), so
        when they raise they have changed nothing and there is nothing to undo;
        SAVEPOINT and RELEASE would cost about a third of an append. Whether a
        job wrote is told by ``total_changes`` (rows changed by completed
        statements on this connection). A job that raises after writing raises
        :class:`_PartialWrite`, and the batch is replayed with savepoints.
        """
        before = conn.total_changes
        try:
            job.execute(conn)
        except Exception as exc:
            if not conn.in_transaction:
                # SQLite rolled the whole transaction back (e.g. a disk error).
                raise sqlite3.OperationalError(f"transaction aborted: {exc}") from exc
            if conn.total_changes != before:
                raise _PartialWrite from exc
            _record_failure(job, exc)

    @staticmethod
    def _run_job_in_savepoint(conn: sqlite3.Connection, job: _Work) -> None:
        """Run one job in a savepoint so that its failure undoes only itself.

        A failure to roll back the savepoint (the transaction is gone, e.g.
        after a disk error) escapes to ``_run_batch``, which fails the batch.
        """
        conn.execute("SAVEPOINT job")
        try:
            job.execute(conn)
        except Exception as exc:
            conn.execute("ROLLBACK TO job")
            conn.execute("RELEASE job")
            _record_failure(job, exc)
        else:
            conn.execute("RELEASE job")

    @staticmethod
    def _settle(jobs: list[_Work]) -> None:
        """Hand the outcomes to each caller's loop: one wake-up per loop per batch."""
        by_loop: dict[asyncio.AbstractEventLoop, list[_Work]] = {}
        for job in jobs:
            by_loop.setdefault(job.loop, []).append(job)
        for loop, loop_jobs in by_loop.items():
            # A closed loop (RuntimeError) means nobody is waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle_all, loop_jobs)
