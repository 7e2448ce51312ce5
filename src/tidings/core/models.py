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


class Conversation(msgspec.Struct, frozen=True):
    conversation_id: str
    kind: ConversationKind
    title: str | None
    created_by: str
    created_at: int
    last_seq: int


class Member(msgspec.Struct, frozen=True):
    """A member of a conversation with cursors aggregated over the user's devices."""

    user_id: str
    role: Role
    delivered_seq: int
    read_seq: int


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
    """A message to append: the store assigns seq, message_id and deduplicates."""

    conversation_id: str
    sender_id: str
    device_id: str
    client_msg_id: str
    content: bytes
    ts: int


class AppendResult(msgspec.Struct, frozen=True):
    message: Message
    duplicate: bool


class ConversationState(msgspec.Struct, frozen=True):
    """A conversation as one member sees it in a listing or a sync answer.

    ``delivered_seq`` is this device's cursor (where its sync resumes);
    ``read_seq`` is the user's, the highest over all their devices (reading on
    one device reads on all). ``unread`` counts entries after ``read_seq``.
    """

    conversation_id: str
    kind: ConversationKind
    title: str | None
    last_seq: int
    delivered_seq: int
    read_seq: int
    unread: int
    version: int


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
