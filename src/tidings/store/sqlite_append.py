"""Appending to the SQLite log: the appends of a batch together, in a few statements.

An append checks its idempotency key, checks membership, takes the next seq,
bumps the store version, inserts the message (with that version: its
position in the change stream), stamps the conversation and
moves the sender's cursors: six to eight statements when done one message at
a time, each with its own Python-side cost, which grouping cuts by about a
quarter (docs/benchmarks.md, "Figures behind design choices").

The writer hands this module every append that stands next to another in a
batch (:meth:`SqliteWriter.submit_grouped`). :func:`append_many` reads what
they need in two queries (duplicates; membership, seq and cursors), works out
seqs, versions and cursor moves in Python, in order, and writes the results
with one ``executemany`` per table and one version update. The outcome for
each message is the same as appending them one after another.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import msgspec

from tidings.core.errors import ErrorCode, TidingsError
from tidings.core.ids import new_id
from tidings.core.models import AppendResult, Message, NewMessage
from tidings.store.rules import mentions_field

_JSON = msgspec.json.Encoder()


def json_array(items: Sequence[Any]) -> str:
    """``items`` as JSON text, for ``json_each(?)`` to walk: one bound
    parameter for any number of keys. Text, not bytes: SQLite reads a BLOB
    argument as its binary JSONB. msgspec, not ``json.dumps``: this runs for
    every run of appends (docs/benchmarks.md, "Figures behind design choices")."""
    return _JSON.encode(items).decode()


MESSAGE_COLUMNS = "conversation_id, seq, message_id, sender_id, client_msg_id, ts, content"


def _field(i: int) -> str:
    """Field ``i`` of a JSON array handed to SQLite as a ``json_each`` row."""
    return f"json_extract(j.value, '$[{i}]')"


# The two reads take every message of the run in one JSON array parameter
# walked by json_each: one statement for the whole run.
_DUPLICATES = (
    f"SELECT {', '.join('m.' + c for c in MESSAGE_COLUMNS.split(', '))}"
    " FROM json_each(?1) AS j JOIN messages AS m"
    f" ON m.sender_id = {_field(0)} AND m.client_msg_id = {_field(1)}"
)
_SENDERS = (
    f"SELECT {_field(0)}, m.conversation_id, m.user_id,"
    " c.last_seq, m.delivered_seq, m.read_seq, COALESCE(d.delivered_seq, 0)"
    " FROM json_each(?1) AS j"
    f" JOIN members AS m ON m.conversation_id = {_field(1)} AND m.user_id = {_field(2)}"
    " JOIN conversations AS c ON c.conversation_id = m.conversation_id"
    f" LEFT JOIN device_cursors AS d ON d.device_id = {_field(0)}"
    " AND d.conversation_id = m.conversation_id"
)
_TAKE_VERSIONS = "UPDATE meta SET version = version + ? RETURNING version"
_INSERT_MESSAGE = (
    "INSERT INTO messages (conversation_id, seq, message_id, sender_id, device_id,"
    " client_msg_id, ts, content, kind, target_seq, mentions, version)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_TARGETS = (
    f"SELECT m.conversation_id, m.seq, m.kind, m.target_seq FROM json_each(?1) AS j"
    f" JOIN messages AS m ON m.conversation_id = {_field(0)} AND m.seq = {_field(1)}"
)
DELETED_CONTENT = b'{"kind":"deleted"}'
"""What a deleted entry's content becomes (``docs/protocol.md``, "Delete for everyone")."""
_SCRUB_TARGET = (
    "UPDATE messages SET content = ?, kind = 'deleted', mentions = NULL"
    " WHERE conversation_id = ? AND seq = ?"
)
_SCRUB_EDITS = (
    "UPDATE messages SET content = ?, mentions = NULL"
    " WHERE conversation_id = ? AND target_seq = ? AND kind = 'edit'"
)
_STAMP_CONVERSATION = "UPDATE conversations SET last_seq = ?, version = ? WHERE conversation_id = ?"
MOVE_MEMBER = (
    "UPDATE members SET delivered_seq = ?, read_seq = ? WHERE conversation_id = ? AND user_id = ?"
)
ADVANCE_DEVICE = (
    "INSERT INTO device_cursors (device_id, conversation_id, delivered_seq) VALUES (?, ?, ?)"
    " ON CONFLICT (device_id, conversation_id) DO UPDATE"
    " SET delivered_seq = excluded.delivered_seq"
    " WHERE excluded.delivered_seq > device_cursors.delivered_seq"
)
"""Move a device's cursor forward, never back: (device_id, conversation_id, seq)."""


def scrubbed_edit(target: int) -> bytes:
    """What an edit of a deleted entry becomes: its place in the stream stays, its text goes."""
    return b'{"kind":"edit","target":%d,"deleted":true}' % target


def message_from_row(row: tuple[str, int, str, str, str, int, bytes]) -> Message:
    cid, seq, mid, sender, cmid, ts, content = row
    return Message(cid, seq, mid, sender, cmid, ts, bytes(content))


def bump_version(conn: sqlite3.Connection) -> int:
    """Take the next store version (one statement; a run of appends takes many at once)."""
    (version,) = conn.execute(_TAKE_VERSIONS, (1,)).fetchone()
    return int(version)


class LogWrites:
    """Messages to store in one go, and the seqs, versions and cursors they move.

    Load the state of every conversation and sender involved (:meth:`sender`),
    :meth:`add` messages in order, then :meth:`write` once. A sender with no
    loaded cursors (no longer a member, e.g. after removing themself) moves
    none. Cursors follow a new message only where they stood just before it,
    so a reply to a conversation read to the end keeps it read, and a cursor
    never skips a message the sender's devices were not given.
    """

    def __init__(self) -> None:
        self._last_seq: dict[str, int] = {}
        self._stamps: dict[str, tuple[int, int]] = {}
        self._members: dict[tuple[str, str], tuple[int, int]] = {}
        self._moved_members: set[tuple[str, str]] = set()
        self._devices: dict[tuple[str, str], int] = {}
        self._moved_devices: set[tuple[str, str]] = set()
        self._rows: list[
            tuple[str, int, str, str, str, str, int, bytes, str | None, int | None, str | None]
        ] = []
        self._redacted: list[tuple[str, int]] = []

    def conversation(self, conversation_id: str, last_seq: int) -> None:
        self._last_seq.setdefault(conversation_id, last_seq)

    def sender(
        self,
        conversation_id: str,
        user_id: str,
        device_id: str,
        cursors: tuple[int, int, int],
    ) -> None:
        """Record a sender's member cursors (delivered, read) and device cursor."""
        delivered, read, device_delivered = cursors
        self._members.setdefault((conversation_id, user_id), (delivered, read))
        self._devices.setdefault((device_id, conversation_id), device_delivered)

    def knows(self, message: NewMessage) -> bool:
        """Whether ``message``'s sender was loaded as a member of its conversation."""
        return (message.conversation_id, message.sender_id) in self._members

    def add(self, message: NewMessage) -> Message:
        cid = message.conversation_id
        seq = self._last_seq[cid] + 1
        self._last_seq[cid] = seq
        self._stamps[cid] = (seq, len(self._rows))  # the version is taken at write
        stored = Message(
            cid,
            seq,
            new_id("m"),
            message.sender_id,
            message.client_msg_id,
            message.ts,
            message.content,
        )
        self._rows.append(
            (
                cid,
                seq,
                stored.message_id,
                stored.sender_id,
                message.device_id,
                stored.client_msg_id,
                stored.ts,
                stored.content,
                message.kind,
                message.target,
                mentions_field(message.mentions) if message.mentions else None,
            )
        )
        if message.redacts and message.target is not None:
            self._redacted.append((cid, message.target))
        behind = seq - 1
        member = (cid, message.sender_id)
        cursors = self._members.get(member)
        if cursors is None:
            return stored
        delivered, read = cursors
        if delivered == behind or read == behind:
            self._members[member] = (
                seq if delivered == behind else delivered,
                seq if read == behind else read,
            )
            self._moved_members.add(member)
        device = (message.device_id, cid)
        if message.device_id and self._devices.get(device) == behind:
            self._devices[device] = seq
            self._moved_devices.add(device)
        return stored

    def write(self, conn: sqlite3.Connection) -> None:
        """Store the added messages: one statement per table, however many messages."""
        if not self._rows:
            return
        (last,) = conn.execute(_TAKE_VERSIONS, (len(self._rows),)).fetchone()
        first = last - len(self._rows) + 1  # message i got version first + i
        conn.executemany(_INSERT_MESSAGE, [(*row, first + i) for i, row in enumerate(self._rows)])
        conn.executemany(
            _STAMP_CONVERSATION,
            [(seq, first + i, cid) for cid, (seq, i) in self._stamps.items()],
        )
        if self._moved_members:
            conn.executemany(
                MOVE_MEMBER, [(*self._members[key], *key) for key in self._moved_members]
            )
        if self._moved_devices:
            conn.executemany(
                ADVANCE_DEVICE, [(*key, self._devices[key]) for key in self._moved_devices]
            )
        for cid, target in self._redacted:
            conn.execute(_SCRUB_TARGET, (DELETED_CONTENT, cid, target))
            conn.execute(_SCRUB_EDITS, (scrubbed_edit(target), cid, target))


def append_many(
    conn: sqlite3.Connection, messages: Sequence[NewMessage]
) -> list[AppendResult | TidingsError]:
    """Append ``messages`` in order, as if one at a time; one outcome per message.

    A duplicate (same sender and ``client_msg_id`` as a stored message, or as
    an earlier one of ``messages``) gets the stored message back; a sender who
    is not a member gets ``not_member`` and writes nothing.
    """
    keys = json_array([(m.sender_id, m.client_msg_id) for m in messages])
    stored: dict[tuple[str, str], Message] = {}
    for row in conn.execute(_DUPLICATES, (keys,)):
        found = message_from_row(row)
        stored[(found.sender_id, found.client_msg_id)] = found
    log = LogWrites()
    senders = json_array(
        list(dict.fromkeys((m.device_id, m.conversation_id, m.sender_id) for m in messages))
    )
    for device_id, cid, uid, last_seq, delivered, read, device_delivered in conn.execute(
        _SENDERS, (senders,)
    ):
        log.conversation(cid, last_seq)
        log.sender(cid, uid, device_id, (delivered, read, device_delivered))
    # A run of plain texts (the common case) reads no targets and checks none.
    targets = _Targets(conn, messages) if any(m.target is not None for m in messages) else None
    outcomes: list[AppendResult | TidingsError] = []
    for message in messages:
        key = (message.sender_id, message.client_msg_id)
        duplicate = stored.get(key)
        if duplicate is not None:
            outcomes.append(AppendResult(duplicate, duplicate=True))
        elif not log.knows(message):
            outcomes.append(TidingsError(ErrorCode.NOT_MEMBER, "not a member of this conversation"))
        elif targets is not None and (refused := targets.refuse(message)) is not None:
            outcomes.append(refused)
        else:
            stored[key] = added = log.add(message)
            if targets is not None:
                targets.added(message, added.seq)
            outcomes.append(AppendResult(added, duplicate=False))
    log.write(conn)
    return outcomes


class _Targets:
    """The entries that the side entries of a run refer to, as the run goes:
    loaded in one statement (a run of plain texts has none), then kept up to
    date as the run adds entries and deletes, so that an edit after a delete
    of the same target in one run is refused exactly as in two."""

    __slots__ = ("_known",)

    def __init__(self, conn: sqlite3.Connection, messages: Sequence[NewMessage]) -> None:
        self._known: dict[tuple[str, int], tuple[str | None, int | None]] = {}
        wanted = [(m.conversation_id, m.target) for m in messages if m.target is not None]
        for cid, seq, kind, target in conn.execute(_TARGETS, (json_array(wanted),)):
            self._known[(cid, seq)] = (kind, target)

    def refuse(self, message: NewMessage) -> TidingsError | None:
        """Why ``message``'s target rules it out, or None (also when it has none)."""
        if message.target is None:
            return None
        found = self._known.get((message.conversation_id, message.target))
        if found is None or found[1] is not None:
            return TidingsError(
                ErrorCode.NOT_FOUND, f"no message {message.target} in this conversation"
            )
        if found[0] == "deleted":
            return TidingsError(ErrorCode.FORBIDDEN, f"message {message.target} was deleted")
        return None

    def added(self, message: NewMessage, seq: int) -> None:
        self._known[(message.conversation_id, seq)] = (message.kind, message.target)
        if message.redacts and message.target is not None:
            self._known[(message.conversation_id, message.target)] = ("deleted", None)
