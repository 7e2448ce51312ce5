"""The indexer: the change-log worker that keeps the live index current.

It turns each batch of the change stream into index operations
(:func:`ops_of`) and hands them to the keeper, which applies them to the
live generation in one transaction with the batch's position. Delivery is
at least once and a generation records the position it has applied, so a
replayed change at or below it is skipped and one above it is applied
again harmlessly (a put replaces, an edit rewrites, a remove removes).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import msgspec

from tidings.core.content_kinds import ContentKinds, read_head
from tidings.core.models import Change, ChangeBatch
from tidings.features.search.port import Edit, Op, Put, Remove

WORKER_NAME = "search"


def ops_of(changes: Iterable[Change], kinds: ContentKinds, oldest_ts: int) -> list[Op]:
    """What the index must do for ``changes``, in their order.

    Only kinds that declare indexable text are indexed (an e2e kind declares
    none). A kind that redacts its target (delete) removes it; one that
    targets an entry and has text (edit) replaces the target's text, keeping
    its seq; any other kind with text is indexed at its own seq, unless it
    is older than ``oldest_ts`` (the index's window).
    """
    ops: list[Op] = []
    for change in changes:
        message = change.message
        try:
            head = read_head(message.content)
            kind = kinds.sendable.get(head.kind)
            if kind is not None and kind.redacts and head.target is not None:
                ops.append(Remove(message.conversation_id, head.target))
                continue
            text = kinds.indexable_text(message.content)
        except msgspec.DecodeError:
            # Not its kind's shape any more: an edit scrubbed by a later delete
            # keeps its kind and target, not its text. Nothing to index.
            continue
        if not text:
            continue
        if kind is not None and kind.targets and head.target is not None:
            ops.append(Edit(message.conversation_id, head.target, text))
        elif message.ts >= oldest_ts:
            ops.append(
                Put(message.conversation_id, message.seq, message.sender_id, message.ts, text)
            )
    return ops


class Follows(Protocol):
    """What the indexer hands its batches to (``keeper.Keeper``)."""

    async def follow(self, batch: ChangeBatch) -> None: ...


class Indexer:
    """The ``search`` change-log worker (``tidings.core.workers.ChangeWorker``)."""

    name = WORKER_NAME

    def __init__(self, keeper: Follows) -> None:
        self._keeper = keeper

    async def handle(self, batch: ChangeBatch) -> None:
        await self._keeper.follow(batch)
