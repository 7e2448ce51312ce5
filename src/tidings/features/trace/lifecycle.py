"""From stored rows to a message's lifecycle: one :class:`Stage` per stage
and device, in time order across nodes (the output of ``tidings trace`` and
of the admin call, docs/protocol.md "Operations")."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

import msgspec

from tidings.features.trace.port import TraceRow, TraceStore

_STAGES = ("received", "persisted", "published", "acked", "delivered", "redelivered")
ORDER = {name: rank for rank, name in enumerate((*_STAGES, "client_acked", "read"))}
"""Stages recorded in the same microsecond sort in the order they happen."""

MAX_ROWS = 10_000
"""Rows read per message: its own, and the cursor moves at or beyond it (a
busy conversation's later moves are many; the earliest are the ones that count)."""


class Stage(msgspec.Struct, frozen=True, omit_defaults=True):
    """One line of a trace. ``stage``, ``ts`` (milliseconds since the epoch, as
    every time in the protocol), ``node``, ``device_id`` and ``user_id`` are
    the contract's; the rest say which message and, where known, more."""

    stage: str
    ts: int
    node: str
    device_id: str | None = None
    user_id: str | None = None
    message_id: str | None = None
    conversation_id: str = ""
    seq: int = 0
    network: str | None = None
    via: str | None = None
    """For ``delivered``: ``live`` (the fan-out) or ``sync`` (a sync answer)."""
    attempt: int | None = None
    """For ``redelivered``: 1 for the first re-send."""
    ts_us: int = 0
    """``ts`` in microseconds: the order of stages less than a millisecond apart."""


def _stage(
    row: TraceRow,
    stage: str,
    ts_us: int,
    who: tuple[str | None, str | None, str | None] = (None, None, None),
    via: str | None = None,
    attempt: int | None = None,
) -> Stage:
    """A stage of ``row``'s message; ``who`` is (user_id, device_id, network)."""
    user_id, device_id, network = who
    return Stage(
        stage=stage,
        ts=ts_us // 1000,
        node=row.node,
        device_id=device_id,
        user_id=user_id,
        message_id=row.message_id,
        conversation_id=row.conversation_id,
        seq=row.seq,
        network=network,
        via=via,
        attempt=attempt,
        ts_us=ts_us,
    )


def _expand(row: TraceRow) -> Iterable[Stage]:
    if row.stage in ("delivered", "synced"):
        via = "live" if row.stage == "delivered" else "sync"
        for user_id, device_id, network in json.loads(row.devices or "[]"):
            yield _stage(row, "delivered", row.ts_us, (user_id, device_id, network), via)
        return
    who = (row.user_id, row.device_id, row.network)
    if row.stage != "send":
        yield _stage(row, row.stage, row.ts_us, who, attempt=row.attempt)
        return
    yield _stage(row, "received", row.ts_us, who)
    if row.persisted_us is not None:
        yield _stage(row, "persisted", row.persisted_us)
    if row.published_us is not None:
        yield _stage(row, "published", row.published_us)
    if row.acked_us is not None:
        yield _stage(row, "acked", row.acked_us, who)


def lifecycle(rows: Sequence[TraceRow], seq: int) -> list[Stage]:
    """The stages of message ``seq`` from its rows: a ``client_acked`` is the
    first ``delivered`` of each device that covered it, a ``read`` the first
    ``read`` of each user, later ones are not part of its life."""
    message_id = next((row.message_id for row in rows if row.stage == "send"), None)
    stages: list[Stage] = []
    covered: set[tuple[str, str | None]] = set()
    for row in rows:  # earliest first
        if row.stage in ("client_acked", "read"):
            key = (row.stage, row.user_id if row.stage == "read" else row.device_id)
            if key in covered:
                continue
            covered.add(key)
        for stage in _expand(row):
            stages.append(msgspec.structs.replace(stage, seq=seq, message_id=message_id))
    stages.sort(key=lambda s: (s.ts_us, ORDER.get(s.stage, len(ORDER))))
    return stages


class TraceReader:
    """Traces by message id or client_msg_id, for the CLI and the admin call."""

    def __init__(self, store: TraceStore) -> None:
        self._store = store

    async def trace(self, identifier: str) -> list[list[Stage]]:
        """One lifecycle per message the identifier names (a client_msg_id may
        name several, from several senders); none if it names no traced one."""
        found = []
        for conversation_id, seq in sorted(await self._store.locate(identifier)):
            rows = await self._store.rows(conversation_id, seq, MAX_ROWS)
            if rows:
                found.append(lifecycle(rows, seq))
        return found
