"""Domain records shared by the core, the stores and the transports.

They are immutable ``msgspec.Struct`` values: cheap to build in the hot path,
hashable, and encodable without a copy. Message content is kept as the raw
JSON bytes the sender sent (``content``): it is validated once on the way in,
stored verbatim and written verbatim into every recipient's ``msg`` frame.
"""

from __future__ import annotations

from enum import StrEnum

import msgspec


class ConversationKind(StrEnum):
    DIRECT = "direct"
    GROUP = "group"


class Role(StrEnum):
    ADMIN = "admin"
    MEMBER = "member"


class User(msgspec.Struct, frozen=True):
    user_id: str
    username: str
    created_at: int


class Credentials(msgspec.Struct, frozen=True):
    """A user with the stored password hash; only the auth service sees this."""

    user: User
    password_hash: str
    disabled: bool = False


class Account(msgspec.Struct, frozen=True):
    """A user as an operator sees it (``tidings user list``)."""

    user: User
    disabled_at: int | None
    live_devices: int


class Device(msgspec.Struct, frozen=True):
    """One login of a user; cursors, keys and push subscriptions hang off it."""

    device_id: str
    user_id: str
    name: str
    created_at: int


class HistoryVisibility(StrEnum):
    """What a member added to a group after its creation may read."""

    JOINED = "joined"
    """From the ``member_added`` event that added them (the default)."""
    FULL = "full"
    """Everything the server still holds."""


class Conversation(msgspec.Struct, frozen=True):
    """A conversation and its settings.

    ``retention_days`` None follows the server's policy; 0 keeps for ever.
    ``purged_seq``: every entry up to it was removed by the retention purge.
    """

    conversation_id: str
    kind: ConversationKind
    title: str | None
    created_by: str
    created_at: int
    last_seq: int
    history: HistoryVisibility = HistoryVisibility.JOINED
    retention_days: int | None = None
    purged_seq: int = 0


class Member(msgspec.Struct, frozen=True):
    """A member of a conversation with cursors aggregated over the user's devices."""

    user_id: str
    role: Role
    delivered_seq: int
    read_seq: int
    visible_after: int = 0
    """The member reads entries above this seq only (a later joiner of a
    group whose history is ``joined``: the seq before their ``member_added``)."""


class Message(msgspec.Struct, frozen=True):
    """One entry of a conversation's seq stream (a text, a membership change, ...)."""

    conversation_id: str
    seq: int
    message_id: str
    sender_id: str
    client_msg_id: str
    ts: int
    content: bytes  # the JSON object, as sent


class Change(msgspec.Struct, frozen=True):
    """A stored message at its place in the store's change stream.

    ``position`` is store-wide and increases in an order every consumer can
    follow without missing anything (``Store.changes_after``).
    """

    position: int
    message: Message


class ChangeBatch(msgspec.Struct, frozen=True):
    """A page of the change stream.

    ``next_position`` is where the next read resumes (it may pass positions
    that name no message, such as a conversation's creation); ``head`` is the
    highest position the store could hand out at the time of the read, so
    ``head - next_position`` is how far behind the reader is.
    """

    changes: list[Change]
    next_position: int
    head: int


class NewMessage(msgspec.Struct, frozen=True):
    """A message to append: the store assigns seq, message_id and deduplicates.

    The optional fields say what the store must know of an entry beyond its
    bytes (a plain text sets none of them, and costs nothing more):
    ``kind`` for every kind but ``text`` (unread counts skip side entries and
    membership events); ``target``, the seq an edit, delete or reaction refers
    to (the store checks it in the append's own transaction: it exists, is no
    side entry itself and was not deleted); ``redacts``: a delete for
    everyone, which scrubs the target and its edits in that same transaction;
    ``mentions``: the user ids mentioned, ``*`` for everyone in a group.
    """

    conversation_id: str
    sender_id: str
    device_id: str
    client_msg_id: str
    content: bytes
    ts: int
    kind: str | None = None
    target: int | None = None
    redacts: bool = False
    mentions: tuple[str, ...] = ()


class AppendResult(msgspec.Struct, frozen=True):
    message: Message
    duplicate: bool


UNREAD_CAP = 10_000
"""Unread and mention counts stop at this (a listing scans at most this many
entries per conversation; a client shows "9999+")."""

MUTED_FOR_EVER = -1
"""``MemberSettings.muted_until`` of a conversation muted until unmuted."""


class MemberSettings(msgspec.Struct, frozen=True):
    """One member's own settings of a conversation, the same on all their devices.

    ``muted_until``: ms since the epoch, :data:`MUTED_FOR_EVER`, or None (not
    muted). Muting changes notifications, not unread counts.
    """

    muted_until: int | None = None
    archived: bool = False
    pinned: bool = False

    def muted(self, now: int) -> bool:
        return self.muted_until is not None and (
            self.muted_until == MUTED_FOR_EVER or self.muted_until > now
        )


class ConversationState(msgspec.Struct, frozen=True):
    """A conversation as one member sees it in a listing or a sync answer.

    ``delivered_seq`` is this device's cursor (where its sync resumes);
    ``read_seq`` is the user's, the highest over all their devices (reading on
    one device reads on all). ``unread`` counts the messages after
    ``read_seq`` that others sent and a person sees (no side entries, no
    membership events, none deleted); ``mentions`` those of them that mention
    the user (or everyone). ``history_start`` is the first seq the member can
    still read (above a retention purge and, for a later joiner, their join).
    """

    conversation_id: str
    kind: ConversationKind
    title: str | None
    last_seq: int
    delivered_seq: int
    read_seq: int
    unread: int
    version: int
    mentions: int = 0
    history_start: int = 1
    settings: MemberSettings = msgspec.field(default_factory=MemberSettings)


class PurgeResult(msgspec.Struct, frozen=True):
    """What one retention sweep removed: the new ``purged_seq`` of each
    conversation it touched, and how many entries went."""

    purged: dict[str, int]
    entries: int


class CursorState(msgspec.Struct, frozen=True):
    """A member's cursors after an update; ``moved`` is False when nothing advanced."""

    conversation_id: str
    user_id: str
    delivered_seq: int
    read_seq: int
    moved: bool


class ReceiptCounts(msgspec.Struct, frozen=True):
    """How many members hold / have read up to ``seq`` (for ``receipt_summary``)."""

    conversation_id: str
    seq: int
    delivered_count: int
    read_count: int
    members: int


class Restore(msgspec.Struct, frozen=True):
    """A restore from backup (``Store.record_restore``).

    Messages sent between ``from_ts`` (the backup's time) and ``to_ts`` (the
    restore's) may be lost: the store's history ends at the backup, and the
    new ``epoch`` tells clients so.
    """

    epoch: str
    previous_epoch: str
    from_ts: int
    to_ts: int


class ReconcileGap(msgspec.Struct, frozen=True):
    """What one device held of one conversation beyond the restored history.

    ``held_last_seq`` is the device's cursor before the restore and
    ``server_last_seq`` the server's ``last_seq`` when the device compared;
    ``own`` and ``others`` count the messages it held that the server no
    longer has (sent by the device's user, and by everyone else).
    """

    conversation_id: str
    server_last_seq: int
    held_last_seq: int
    own: int
    others: int


class ReconcileReport(msgspec.Struct, frozen=True):
    """A device's report after an epoch change (the ``reconcile`` frame)."""

    epoch: str
    device_id: str
    user_id: str
    reported_at: int
    gaps: list[ReconcileGap]
