"""The single writer of the SQLite store: one connection, batched transactions.

SQLite allows one writer at a time, and with ``synchronous=full`` each COMMIT
costs an fsync (about a millisecond or more). Letting every coroutine open its
own write transaction would serialise on the database lock and pay one fsync
per message. Instead, every write is a *job* (a function of the write
connection) put on a queue; the writer takes every job waiting, up to
:data:`MAX_BATCH_OPS`, and runs them in ONE transaction, where a job that
raises (``not_member``, ``conflict``...) undoes only itself: jobs check before
they write, so a failing one has usually written nothing, and a batch where one
failed half-way is replayed with a SAVEPOINT around each job (``_run_jobs``
explains why savepoints are not the default). Neighbouring jobs of one kind
(appends, cursor moves) run together, one statement per table for the group
(:meth:`SqliteWriter.submit_grouped`).
One COMMIT then makes the whole batch durable, and only after it succeeded are
the callers' futures resolved: an acknowledged write is durable.
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
import sqlite3
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, Protocol, TypeVar

from tidings.core.errors import ErrorCode, TidingsError

T = TypeVar("T")
Item = TypeVar("Item")

GroupRunner = Callable[[sqlite3.Connection, Sequence[Item]], Sequence["T | TidingsError"]]
"""Runs the items of several jobs of one kind in one go (multi-row statements)
and returns one outcome per item, in order: a result, or the error that item
fails with. An item that fails must have written nothing; a runner that raises
has its jobs replayed one by one in savepoints."""

log = logging.getLogger(__name__)

MAX_BATCH_OPS = 2048
"""Most jobs in one transaction. Under load a batch is whatever queued during
the last commit: with several sends of a connection in flight that is
hundreds to thousands of jobs (1,000 in the throughput benchmark), and one
COMMIT for all of them costs less per job than several (docs/benchmarks.md,
"Figures behind design choices", has the cap of 256 against this one).
Small enough that one batch holds the write lock for tens of milliseconds, so
readers' WAL never grows without bound."""

SLICE_OPS = 256
"""Jobs whose statements run in one turn of the event loop. A bigger batch
lets the loop serve everything else between slices (a slice takes a few
milliseconds), inside the same transaction."""

JOIN_TIMEOUT_S = 30.0
"""How long ``close`` waits for the writer to finish the jobs already queued.
A full queue of batches commits in well under this; beyond it the disk is
stuck and waiting longer would only hang shutdown."""


def unavailable(exc: BaseException) -> TidingsError:
    """The retryable error clients get when the database cannot be written or read."""
    return TidingsError(ErrorCode.UNAVAILABLE, f"store unavailable: {exc}", retry_after_ms=1000)


class _Work(Protocol):
    """What the writer sees of a job, whatever its result type."""

    name: str
    error: BaseException | None

    def execute(self, conn: sqlite3.Connection) -> None: ...

    def reset(self) -> None: ...

    def settle(self) -> None: ...


class _Job(Generic[T]):
    """One queued write: the function to run and the caller's future.

    The outcome is recorded while the batch runs and copied into the future
    only once the batch's transaction has ended.
    """

    __slots__ = ("error", "fn", "future", "name", "result")

    def __init__(
        self,
        name: str,
        fn: Callable[[sqlite3.Connection], T],
        future: asyncio.Future[T],
    ) -> None:
        self.name = name
        self.fn = fn
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
        """Resolve the future (on the writer's loop); a caller that gave up is skipped."""
        if self.future.done():
            return
        if self.error is not None:
            self.future.set_exception(self.error)
        elif self.result is not None:
            self.future.set_result(self.result[0])
        else:  # pragma: no cover - the writer always records one outcome
            self.future.set_exception(RuntimeError(f"write {self.name!r} never ran"))


class _GroupJob(_Job[T], Generic[Item, T]):
    """A job whose neighbours in a batch with the same runner run together.

    Alone (a replay in savepoints) it is a group of one.
    """

    __slots__ = ("item", "runner")

    def __init__(
        self,
        name: str,
        runner: GroupRunner[Item, T],
        item: Item,
        future: asyncio.Future[T],
    ) -> None:
        super().__init__(name, self._alone, future)
        self.runner = runner
        self.item = item

    def _alone(self, conn: sqlite3.Connection) -> T:
        (outcome,) = self.runner(conn, [self.item])
        if isinstance(outcome, TidingsError):
            raise outcome
        return outcome

    @staticmethod
    def execute_group(conn: sqlite3.Connection, jobs: Sequence[_GroupJob[Any, Any]]) -> None:
        outcomes = jobs[0].runner(conn, [job.item for job in jobs])
        for job, outcome in zip(jobs, outcomes, strict=True):
            if isinstance(outcome, TidingsError):
                job.error = outcome
            else:
                job.result = (outcome,)


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


Run = _Work | list["_GroupJob[Any, Any]"]
"""What the writer executes in one go: a single job, or neighbouring grouped jobs."""


def _runs(batch: list[_Work]) -> list[Run]:
    """Split a batch into runs: neighbouring grouped jobs of one runner go together."""
    runs: list[Run] = []
    for job in batch:
        last = runs[-1] if runs else None
        if not isinstance(job, _GroupJob):
            runs.append(job)
        elif isinstance(last, list) and last[0].runner == job.runner:
            last.append(job)
        else:
            runs.append([job])
    return runs


def _settle_all(jobs: list[_Work]) -> None:
    for job in jobs:
        job.settle()


class SqliteWriter:
    """Owns the write connection and runs its batched transactions.

    It serves the event loop that started it: the statements of a batch run
    on that loop, and only ``COMMIT`` (the fsync, and a WAL checkpoint now and
    then) and a ``BEGIN IMMEDIATE`` that must wait for another process's lock
    run on a thread of their own, one at a time. Measured in the
    throughput benchmark, a writer thread that ran the statements too spent a
    fifth of its samples waiting to take the GIL back after a statement (each
    releases and re-takes it, and the loop held it), and the loop as much
    waiting for the writer.
    """

    def __init__(self, connect: Callable[[], sqlite3.Connection]) -> None:
        self._connect = connect
        self._busy_timeout_ms = 0
        self._conn: sqlite3.Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._jobs: deque[_Work] = deque()
        self._runner: asyncio.Task[None] | None = None
        self._blocking = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tidings-sqlite-io")
        self._closed = False
        self.commits = 0
        """Transactions committed (a batch is one); tests and metrics read it."""
        self.jobs_done = 0
        """Jobs that ran in a committed transaction, failed or not."""

    @property
    def alive(self) -> bool:
        return self._conn is not None and not self._closed

    async def start(self, init: Callable[[sqlite3.Connection], None]) -> None:
        """Open the connection and run ``init`` (migrations) on it, off the loop."""
        if self._conn is not None:
            return
        self._loop = asyncio.get_running_loop()
        try:
            conn = await self._off_loop(self._connect)
            try:
                (self._busy_timeout_ms,) = conn.execute("PRAGMA busy_timeout").fetchone()
                await self._off_loop(init, conn)
            except BaseException:
                conn.close()
                raise
        except BaseException as exc:
            self._closed = True
            self._blocking.shutdown(wait=False)
            if isinstance(exc, sqlite3.Error):
                raise unavailable(exc) from exc
            raise
        self._conn = conn

    async def submit(self, name: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in the next batch; return once its transaction has committed.

        If ``fn`` raises, its changes are undone (see ``_run_jobs``) and the
        exception is raised here. If the caller is cancelled the job still
        runs (it may already be committed): a retry by the client is
        deduplicated by the idempotency keys.
        """
        future: asyncio.Future[T] = self._open_loop().create_future()
        self._enqueue(_Job(name, fn, future))
        return await future

    async def submit_grouped(self, name: str, runner: GroupRunner[Item, T], item: Item) -> T:
        """Like :meth:`submit`, for a write that runs together with its kind.

        Jobs with the same ``runner`` that stand next to each other in a batch
        go to one call of ``runner`` with all their items: a burst of appends
        costs a handful of statements instead of several statements each.
        Order within the batch is kept, so a job of another kind between two
        appends still sees (and is seen by) them in order.
        """
        future: asyncio.Future[T] = self._open_loop().create_future()
        self._enqueue(_GroupJob(name, runner, item, future))
        return await future

    def _open_loop(self) -> asyncio.AbstractEventLoop:
        """The loop the writer serves, once the writer is known to take jobs.

        It is the loop that started the writer, remembered rather than asked
        for (why: ``core/loop.py``).
        """
        if self._closed or self._loop is None or self._conn is None:
            raise TidingsError(ErrorCode.UNAVAILABLE, "store is closed")
        return self._loop

    def _enqueue(self, job: _Work) -> None:
        self._jobs.append(job)
        if self._runner is None:
            assert self._loop is not None
            self._runner = self._loop.create_task(self._drain(), name="tidings-sqlite-writer")

    async def close(self) -> None:
        """Let queued jobs finish, then close the connection."""
        if self._closed:
            return
        self._closed = True
        if self._runner is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._runner), JOIN_TIMEOUT_S)
            except TimeoutError:
                log.error("sqlite writer did not finish its jobs within %ss", JOIN_TIMEOUT_S)
        if self._conn is not None:
            await self._off_loop(self._conn.close)
            self._conn = None
        self._blocking.shutdown(wait=False)

    # -- batches -------------------------------------------------------------
    async def _off_loop(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a call that may block (lock waits, fsync) on the writer's own thread.

        A caller cancelled meanwhile still waits for the call to end: the
        thread is using the connection, and nothing else may until it is done.
        """
        assert self._loop is not None
        call = self._loop.run_in_executor(self._blocking, fn, *args)
        try:
            return await asyncio.shield(call)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await call
            raise

    async def _drain(self) -> None:
        """Run batches while jobs are waiting; jobs queued meanwhile form the next one."""
        try:
            while self._jobs:
                take = min(len(self._jobs), MAX_BATCH_OPS)
                batch = [self._jobs.popleft() for _ in range(take)]
                await self._run_batch(batch)
        finally:
            self._runner = None

    async def _run_batch(self, batch: list[_Work]) -> None:
        conn = self._conn
        assert conn is not None
        try:
            try:
                await self._begin(conn, batch)
                await self._attempt(conn, batch, savepoints=False)
            except _PartialWrite:
                # Rare: a job failed half-way through its writes. Undo the
                # whole attempt and replay the batch with one savepoint per job.
                conn.execute("ROLLBACK")
                await self._begin(conn, batch)
                await self._attempt(conn, batch, savepoints=True)
            await self._off_loop(conn.execute, "COMMIT")
            self.commits += 1
        except Exception as exc:
            # BEGIN, COMMIT or a rollback failed, or a job's error aborted the
            # transaction (or, not a database error, the writer's thread is
            # gone after a close that timed out): nothing of the batch is
            # stored, so every job fails retryably, including the ones whose
            # own work had succeeded. No caller is left waiting.
            if isinstance(exc, sqlite3.Error):
                log.warning("sqlite batch of %d jobs failed: %s", len(batch), exc)
            else:
                log.exception("sqlite batch of %d jobs failed", len(batch))
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    log.exception("sqlite rollback failed")
            for job in batch:
                job.reset()
                job.error = unavailable(exc)
        except asyncio.CancelledError:
            # The loop is going away without close(): nobody will finish this
            # batch. (If its COMMIT had just succeeded, a client's retry is
            # deduplicated by its idempotency key.)
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            for job in batch:
                job.reset()
                job.error = TidingsError(ErrorCode.UNAVAILABLE, "store is closing")
            _settle_all(batch)
            raise
        self.jobs_done += len(batch)
        _settle_all(batch)

    async def _begin(self, conn: sqlite3.Connection, batch: list[_Work]) -> None:
        for job in batch:
            job.reset()
        if not self._begin_if_free(conn):
            await self._off_loop(conn.execute, "BEGIN IMMEDIATE")

    def _begin_if_free(self, conn: sqlite3.Connection) -> bool:
        """``BEGIN IMMEDIATE`` on the loop if the write lock is free: the usual
        case, this process being the only writer, costs no trip to the thread
        (which under load waits for a whole turn of a busy loop to come back).
        False if another process holds the lock: the caller then waits for it
        off the loop, for up to the connection's busy timeout."""
        conn.execute("PRAGMA busy_timeout = 0")
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:
                raise
            return False
        finally:
            conn.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
        return True

    @classmethod
    async def _attempt(
        cls, conn: sqlite3.Connection, batch: list[_Work], *, savepoints: bool
    ) -> None:
        for start in range(0, len(batch), SLICE_OPS):
            if start:
                await asyncio.sleep(0)  # let the loop serve others (SLICE_OPS)
            part = batch[start : start + SLICE_OPS]
            if savepoints:
                for job in part:
                    cls._run_job_in_savepoint(conn, job)
            else:
                for run in _runs(part):
                    cls._run_jobs(conn, run)

    @staticmethod
    def _run_jobs(conn: sqlite3.Connection, run: Run) -> None:
        """Run one job, or a run of grouped jobs, without a savepoint.

        Most jobs check first and write after (membership, duplicates...), so
        when they raise they have changed nothing and there is nothing to undo;
        SAVEPOINT and RELEASE would cost about a third of an append. Whether a
        job wrote is told by ``total_changes`` (rows changed by completed
        statements on this connection). A job that raises after writing raises
        :class:`_PartialWrite`, and the batch is replayed with savepoints; so
        does a group runner that raises at all (its items' outcomes are
        unknown), which the replay then learns one item at a time.
        """
        before = conn.total_changes
        try:
            if isinstance(run, list):
                _GroupJob.execute_group(conn, run)
            else:
                run.execute(conn)
        except Exception as exc:
            if not conn.in_transaction:
                # SQLite rolled the whole transaction back (e.g. a disk error).
                raise sqlite3.OperationalError(f"transaction aborted: {exc}") from exc
            if conn.total_changes != before or isinstance(run, list):
                raise _PartialWrite from exc
            _record_failure(run, exc)

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
