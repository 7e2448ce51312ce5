"""Moving cursors on SQLite: the moves of a batch together, in a few statements.

Every member reports ``delivered`` and ``read`` (the bench's clients every 50
messages or once a second), so one 1000-member group message makes about a
thousand cursor moves. One at a time, each is a lookup and up to two writes.
The writer hands the moves that stand next to each other in a batch to
:func:`advance_many` (:meth:`SqliteWriter.submit_grouped`): one query reads
every member's cursors and the conversation's ``last_seq``, the moves are
applied in Python in order (a member moved twice sees its first move), and
the results go out with one ``executemany`` per table. The outcome of each
move is the same as running them one after another.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import NamedTuple

from tidings.core.errors import ErrorCode, TidingsError
from tidings.core.models import CursorState
from tidings.store.sqlite_append import ADVANCE_DEVICE, MOVE_MEMBER, json_array

_MEMBER_CURSORS = (
    "SELECT m.conversation_id, m.user_id, m.delivered_seq, m.read_seq, c.last_seq"
    " FROM json_each(?1) AS j"
    " JOIN members AS m ON m.conversation_id = json_extract(j.value, '$[0]')"
    " AND m.user_id = json_extract(j.value, '$[1]')"
    " JOIN conversations AS c ON c.conversation_id = m.conversation_id"
)


class CursorMove(NamedTuple):
    """One ``advance_cursors`` call: the cursors asked for (None: not this one)."""

    conversation_id: str
    user_id: str
    device_id: str
    delivered_seq: int | None
    read_seq: int | None


def advance_many(
    conn: sqlite3.Connection, moves: Sequence[CursorMove]
) -> list[CursorState | TidingsError]:
    """Apply ``moves`` in order, as if one at a time; one outcome per move.

    Cursors only move forward and never past the conversation's last seq;
    ``read`` implies ``delivered``. ``moved`` reports the member-level cursors.
    A user who is not a member gets ``not_member`` and writes nothing.
    """
    keys = json_array(list(dict.fromkeys((m.conversation_id, m.user_id) for m in moves)))
    members: dict[tuple[str, str], tuple[int, int, int]] = {
        (cid, uid): (delivered, read, last_seq)
        for cid, uid, delivered, read, last_seq in conn.execute(_MEMBER_CURSORS, (keys,))
    }
    moved: set[tuple[str, str]] = set()
    devices: dict[tuple[str, str], int] = {}
    outcomes: list[CursorState | TidingsError] = []
    for move in moves:
        key = (move.conversation_id, move.user_id)
        state = members.get(key)
        if state is None:
            outcomes.append(TidingsError(ErrorCode.NOT_MEMBER, "not a member of this conversation"))
            continue
        old_delivered, old_read, last_seq = state
        read = max(0, min(move.read_seq or 0, last_seq))
        delivered = max(read, min(move.delivered_seq or 0, last_seq))
        if delivered > 0 and move.device_id:
            device = (move.device_id, move.conversation_id)
            devices[device] = max(devices.get(device, 0), delivered)
        new_delivered = max(old_delivered, delivered)
        new_read = max(old_read, read)
        changed = (new_delivered, new_read) != (old_delivered, old_read)
        if changed:
            members[key] = (new_delivered, new_read, last_seq)
            moved.add(key)
        outcomes.append(CursorState(*key, new_delivered, new_read, changed))
    if devices:
        conn.executemany(ADVANCE_DEVICE, [(*device, seq) for device, seq in devices.items()])
    if moved:
        conn.executemany(MOVE_MEMBER, [(*members[key][:2], *key) for key in moved])
    return outcomes
