"""Typed frames of the Tidings wire protocol, version 1, as the client sees them.

Every server frame in docs/protocol.md is a frozen ``msgspec.Struct`` in one tagged
union (``type`` is the tag), so decoding a frame is one typed parse with no
intermediate dict. Fields that docs/protocol.md marks optional, or that are
additions beyond it, have defaults, so a server that omits them still decodes;
unknown fields are ignored, as the protocol asks of clients.

These structs are also the events the SDK hands to applications (a ``Message``
*is* the ``msg`` frame), which keeps one vocabulary from wire to app.

The client frames are encoded with ``omit_defaults`` so that optional fields
the caller did not set are absent rather than ``null``.

This module is independent of the server package on purpose: the SDK is the
protocol's reference client and must not agree with the server by sharing
code with it.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import msgspec

# Defaults docs/protocol.md gives for the welcome limits; used when a server omits one.
DEFAULT_MAX_CONTENT_BYTES = 64 * 1024
DEFAULT_MAX_FRAME_BYTES = 1024 * 1024
DEFAULT_TYPING_TTL_MS = 5_000

Network = Literal["wifi", "cellular", "ethernet", "unknown"]
TypingState = Literal["start", "stop"]
OwnPresence = Literal["online", "away"]

# Message content is an arbitrary JSON object; ``object`` keeps it typed
# without ``Any``: applications narrow it with ``isinstance``.
Content = dict[str, object]


# -- server -> client --------------------------------------------------------


class Limits(msgspec.Struct, frozen=True):
    """Server limits announced in ``welcome``; extra limits are ignored."""

    max_content_bytes: int = DEFAULT_MAX_CONTENT_BYTES
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    typing_ttl_ms: int = DEFAULT_TYPING_TTL_MS
    # Beyond docs/protocol.md's list (its "..."); None when the server does not say.
    # An outbox flush paces itself with the send rate instead of hitting rate_limited.
    max_group_members: int | None = None
    send_rate_per_s: float | None = None
    send_burst: int | None = None


class Welcome(msgspec.Struct, frozen=True, tag="welcome", tag_field="type"):
    """The session is open."""

    user_id: str
    device_id: str
    session_id: str
    epoch: str
    heartbeat_ms: int
    server_time: int
    limits: Limits = Limits()


class Ack(msgspec.Struct, frozen=True, tag="ack", tag_field="type"):
    """A sent message is durable; ``duplicate`` when it was a retry of a known one."""

    client_msg_id: str
    conversation_id: str
    seq: int
    message_id: str
    ts: int
    duplicate: bool
    id: str | None = None


class Message(msgspec.Struct, frozen=True, tag="msg", tag_field="type"):
    """A message (live, redelivered or from sync), the ``msg`` frame."""

    conversation_id: str
    seq: int
    message_id: str
    sender_id: str
    client_msg_id: str
    ts: int
    content: Content

    @property
    def kind(self) -> str:
        """``content.kind``; ``text`` when absent, as docs/protocol.md says."""
        kind = self.content.get("kind", "text")
        return kind if isinstance(kind, str) else "text"

    @property
    def text(self) -> str | None:
        """The text of a ``text`` message, else ``None`` (show "unsupported message")."""
        text = self.content.get("text")
        return text if self.kind == "text" and isinstance(text, str) else None


class ConversationSyncState(msgspec.Struct, frozen=True):
    """One conversation's server-side cursors, as reported in ``sync_done``."""

    conversation_id: str
    last_seq: int
    delivered_seq: int = 0
    read_seq: int = 0
    unread: int | None = None
    mentions: int | None = None
    """Messages after ``read_seq`` that mention this user (or everyone), by others."""
    history_start: int = 1
    """The first seq this member can still read (retention, or a later join to
    a group whose history is ``joined``); 1 from a server that does not say."""
    muted: bool = False
    """Muted now by this user (unread still counts; notifications do not)."""
    archived: bool = False
    pinned: bool = False


class SyncDone(msgspec.Struct, frozen=True, tag="sync_done", tag_field="type"):
    """The end of one page of a sync answer; ``more`` means ask again."""

    token: str
    conversations: list[ConversationSyncState]
    more: bool
    id: str | None = None


class Receipt(msgspec.Struct, frozen=True, tag="receipt", tag_field="type"):
    """A member's delivered/read cursors moved."""

    conversation_id: str
    user_id: str
    delivered_seq: int
    read_seq: int


class ReceiptSummary(msgspec.Struct, frozen=True, tag="receipt_summary", tag_field="type"):
    """Large groups: how many of ``members`` hold / have read up to ``seq``."""

    conversation_id: str
    seq: int
    delivered_count: int
    read_count: int
    members: int


class Typing(msgspec.Struct, frozen=True, tag="typing", tag_field="type"):
    """A member started/stopped typing; ``expires_ms`` is a duration from receipt."""

    conversation_id: str
    user_id: str
    state: TypingState
    expires_ms: int = DEFAULT_TYPING_TTL_MS


class Presence(msgspec.Struct, frozen=True, tag="presence", tag_field="type"):
    """A user's presence changed."""

    user_id: str
    status: Literal["online", "away", "offline"]
    last_seen: int | None = None


class Pong(msgspec.Struct, frozen=True, tag="pong", tag_field="type"):
    """The answer to ``ping``."""

    id: str | None = None


class Reconnect(msgspec.Struct, frozen=True, tag="reconnect", tag_field="type"):
    """The server is draining: reconnect after ``after_ms``."""

    after_ms: int
    reason: str = ""


class Notice(msgspec.Struct, frozen=True, tag="notice", tag_field="type"):
    """Something to show the user. Code ``restored``: the server was restored
    from a backup, and messages sent between ``from_ts`` and ``to_ts`` (ms)
    may have been lost; ``text`` says so in a sentence an app can show as is."""

    code: str
    text: str
    from_ts: int | None = None
    to_ts: int | None = None


class Reconciled(msgspec.Struct, frozen=True, tag="reconciled", tag_field="type"):
    """The answer to ``reconcile``: the server stored the report."""

    epoch: str
    conversations: int = 0
    id: str | None = None


class ServerError(msgspec.Struct, frozen=True, tag="error", tag_field="type"):
    """The ``error`` frame; ``ref`` is the id / client_msg_id of the frame it answers."""

    code: str
    message: str
    retryable: bool = False
    ref: str | None = None
    retry_after_ms: int | None = None


class Hidden(msgspec.Struct, frozen=True, tag="hidden", tag_field="type"):
    """This user hid (``hidden``) or unhid these seqs, on this device or another."""

    conversation_id: str
    seqs: list[int]
    hidden: bool


class ConversationState(msgspec.Struct, frozen=True, tag="conversation_state", tag_field="type"):
    """This user's own state of a conversation: muted, archived, pinned.

    The ``conversation_state`` frame (sent to every device of the user when it
    changes) and the answer to ``PUT .../state``, one struct for both.
    ``muted_until`` is ms since the epoch, ``-1`` for ever, ``None`` when not
    muted; ``muted`` says whether it is muted now, by the server's clock.
    """

    conversation_id: str
    muted_until: int | None = None
    muted: bool = False
    archived: bool = False
    pinned: bool = False


ServerFrame = (
    Welcome
    | Ack
    | Message
    | SyncDone
    | Receipt
    | ReceiptSummary
    | Typing
    | Presence
    | Pong
    | Reconnect
    | Notice
    | Reconciled
    | Hidden
    | ConversationState
    | ServerError
)


def frame_types(union: Any) -> frozenset[str]:
    """The ``type`` tags of a union of tagged frame structs.

    :data:`SERVER_FRAME_TYPES` is derived from :data:`ServerFrame` with this,
    so that a frame added to the union is known everywhere at once.
    """
    return frozenset(str(member.__struct_config__.tag) for member in get_args(union))


SERVER_FRAME_TYPES = frame_types(ServerFrame)


# -- client -> server --------------------------------------------------------


class ClientInfo(msgspec.Struct, frozen=True, omit_defaults=True):
    """Who is connecting; ``network`` feeds the server's per-network metrics."""

    name: str
    version: str
    network: Network = "unknown"


class Hello(msgspec.Struct, frozen=True, omit_defaults=True, tag="hello", tag_field="type"):
    token: str
    client: ClientInfo | None = None
    epoch: str | None = None


class SyncRequest(msgspec.Struct, frozen=True, omit_defaults=True, tag="sync", tag_field="type"):
    id: str
    since: str | None = None
    cursors: dict[str, int] | None = None
    limit: int | None = None


class SendRequest(msgspec.Struct, frozen=True, omit_defaults=True, tag="send", tag_field="type"):
    conversation_id: str
    client_msg_id: str
    content: Content
    id: str | None = None


class DeliveredRequest(
    msgspec.Struct, frozen=True, omit_defaults=True, tag="delivered", tag_field="type"
):
    conversation_id: str
    seq: int


class ReadRequest(msgspec.Struct, frozen=True, omit_defaults=True, tag="read", tag_field="type"):
    conversation_id: str
    seq: int


class TypingRequest(
    msgspec.Struct, frozen=True, omit_defaults=True, tag="typing", tag_field="type"
):
    conversation_id: str
    state: TypingState


class PresenceRequest(
    msgspec.Struct, frozen=True, omit_defaults=True, tag="presence", tag_field="type"
):
    status: OwnPresence


class PresenceSubscribeRequest(
    msgspec.Struct, frozen=True, omit_defaults=True, tag="presence_subscribe", tag_field="type"
):
    user_ids: list[str]


class PingRequest(msgspec.Struct, frozen=True, omit_defaults=True, tag="ping", tag_field="type"):
    id: str


class ReconcileConversation(msgspec.Struct, frozen=True):
    """One conversation of a ``reconcile`` report: the server's ``last_seq``
    when this device compared, this device's cursor before the restore, and
    how many held messages the server lacks, by this user and by others."""

    conversation_id: str
    server_last_seq: int
    held_last_seq: int
    own: int
    others: int


class ReconcileRequest(
    msgspec.Struct, frozen=True, omit_defaults=True, tag="reconcile", tag_field="type"
):
    epoch: str
    conversations: list[ReconcileConversation]
    id: str | None = None


ClientFrame = (
    Hello
    | SyncRequest
    | SendRequest
    | DeliveredRequest
    | ReadRequest
    | TypingRequest
    | PresenceRequest
    | PresenceSubscribeRequest
    | PingRequest
    | ReconcileRequest
)
