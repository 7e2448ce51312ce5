"""Writes coalesced into batches, adding no delay (the PostgreSQL store's).

Every member's ``delivered`` ack is a cursor move, so one message to a group
of 1000 makes 1000 moves within milliseconds; sent one by one, each was a
round trip and a committed transaction of its own. Appends under load are
the same (the PostgreSQL CPU per append alone and in batches is in
docs/benchmarks.md, "Figures behind design choices"). A :class:`Batcher` queues
writes of one kind and sends whatever is queued as one batch; how a batch is
sent (one ``tidings_advance_cursors_many`` or ``tidings_append_many``
statement) is the store's business, passed in as ``send``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from tidings.core.errors import TidingsError
from tidings.core.models import AppendResult, CursorState, NewMessage
from tidings.store.postgres_errors import store_closed, translate

log = logging.getLogger("tidings.store.postgres")

CURSOR_BATCH_MAX = 1000
"""Most cursor moves sent in one statement. One 1000-member group message
makes about this many on one node at once; a larger batch would hold its
member row locks (and the one connection) longer while adding little."""

APPEND_BATCH_MAX = 500
"""Most appends sent in one statement: past a few hundred the saving per
append is small, while the batch holds its conversations' row locks (which
other nodes' appends to them wait for) until it commits."""


class Queued(Protocol):
    """A queued write: its caller awaits ``future``."""

    @property
    def future(self) -> asyncio.Future[Any]: ...


@dataclass(slots=True)
class CursorMove:
    """One queued ``advance_cursors`` call and the future its caller awaits."""

    conversation_id: str
    user_id: str
    device_id: str
    delivered_seq: int
    read_seq: int
    future: asyncio.Future[CursorState]


CursorOutcome = CursorState | TidingsError
"""What one move of a batch came to: its new state or its own error."""


@dataclass(slots=True)
class AppendItem:
    """One queued ``append`` call and the future its caller awaits."""

    message: NewMessage
    message_id: str
    future: asyncio.Future[AppendResult]
    mentions: str | None = None
    """The message's mentions as stored (``rules.mentions_field``), formed
    and checked by the caller, whose error a bad one is."""


AppendOutcome = AppendResult | TidingsError
"""What one append of a batch came to: the stored message or its own error."""

W = TypeVar("W", bound=Queued)


@dataclass(frozen=True, slots=True)
class BatchStats:
    """Counters of a :class:`Batcher`: how well writes coalesce (and, for
    the tests, proof that a batch is one statement)."""

    writes: int
    batches: int


class Batcher(Generic[W]):
    """Coalesces concurrent writes of one kind into batches, adding no delay.

    ``submit`` queues a write and, unless a flusher task is already running,
    starts one; the flusher sends everything queued (at most ``max_batch``)
    as one batch, waits for it, and repeats while writes are queued, then
    ends. So a lone write leaves at the next turn of the event loop, and the
    writes that arrive while a batch is in flight make up the next batch: the
    batch size follows the load, one batch in flight per batcher, in the
    order submitted.

    Every future is settled: with its own outcome; with the batch's error if
    the batch failed as a whole with a :class:`TidingsError` (``unavailable``:
    the database, not a write, is the problem); or with ``unavailable`` when
    the batcher is closed. A batch that fails otherwise (an error no single
    write was expected to cause, such as a unique violation lost to another
    node) is re-sent one write at a time, so that a write the database
    rejects fails alone, as its own call would have. The flusher carries on
    with the next batch either way.
    """

    def __init__(
        self,
        send: Callable[[Sequence[W]], Awaitable[Sequence[Any]]],
        max_batch: int,
        name: str,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"bad max_batch: {max_batch}")
        self._send = send
        self._max_batch = max_batch
        self._name = name
        self._queue: deque[W] = deque()
        self._flusher: asyncio.Task[None] | None = None
        self._writes = 0
        self._batches = 0

    @property
    def stats(self) -> BatchStats:
        return BatchStats(self._writes, self._batches)

    def submit(self, write: W) -> None:
        """Queue ``write``; its future is settled by the flusher."""
        self._queue.append(write)
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(
                self._flush(), name=f"tidings-{self._name}-flusher"
            )

    async def close(self, timeout_s: float) -> None:
        """Let the queued writes finish for up to ``timeout_s``, then cancel
        the batch in flight and fail whatever is left with ``unavailable``."""
        flusher = self._flusher
        if flusher is not None:
            await asyncio.wait({flusher}, timeout=timeout_s)
            if not flusher.done():
                flusher.cancel()
                await asyncio.wait({flusher}, timeout=timeout_s)
        while self._queue:
            _settle_error(self._queue.popleft().future, store_closed())

    async def _flush(self) -> None:
        """Send batches until the queue is empty (each turn takes at least
        one write off the queue, so this ends once submissions stop)."""
        try:
            while self._queue:
                batch = self._take()
                if batch:
                    await self._run(batch)
        finally:
            self._flusher = None

    def _take(self) -> list[W]:
        """The next batch: up to ``max_batch`` queued writes whose callers still wait."""
        batch: list[W] = []
        while self._queue and len(batch) < self._max_batch:
            write = self._queue.popleft()
            if not write.future.done():  # a cancelled caller needs no write
                batch.append(write)
        return batch

    async def _run(self, batch: list[W]) -> None:
        """Send one batch and settle all its futures; raises only CancelledError
        (closing), after failing the batch's futures that are still pending."""
        try:
            await self._send_and_settle(batch)
        except asyncio.CancelledError:
            for write in batch:
                _settle_error(write.future, store_closed())
            raise

    async def _send_and_settle(self, batch: list[W]) -> None:
        self._writes += len(batch)
        self._batches += 1
        try:
            outcomes = await self._send(batch)
            if len(outcomes) != len(batch):
                raise RuntimeError(f"{len(outcomes)} outcomes for {len(batch)} writes")
        except Exception as exc:
            if len(batch) > 1 and not isinstance(translate(exc), TidingsError):
                log.warning(
                    "%s batch of %d failed, re-sent one by one: %r", self._name, len(batch), exc
                )
                for write in batch:
                    if not write.future.done():
                        await self._send_and_settle([write])
                return
            for write in batch:
                _settle_error(write.future, _error_for_each(exc))
            return
        for write, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, TidingsError):
                _settle_error(write.future, outcome)
            elif not write.future.done():
                write.future.set_result(outcome)


def _settle_error(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


def _error_for_each(exc: Exception) -> BaseException:
    """What one write of a batch that failed as a whole raises: the error a
    single call would have raised, as a fresh instance per caller (each is
    raised, and gets its traceback, in a different task)."""
    translated = translate(exc)
    if not isinstance(translated, TidingsError):
        return translated
    error = TidingsError(
        translated.code, translated.message, retry_after_ms=translated.retry_after_ms
    )
    error.__cause__ = exc.__cause__ if translated is exc else exc
    return error
