"""The wire codec: every client frame and HTTP body is decoded and validated
here, and every server frame is encoded here.

Decoding takes one fast path (a typed ``msgspec`` decode of the tagged union
of client frames). Only when it fails does a second, generic decode work out
which error the sender gets (``bad_frame``, ``unknown_type``, ``too_large``)
and which request it refers to (``ref``), so that the common case pays for one
parse and the error case still gets a precise answer. WebSocket and HTTP use
the same functions, so an error code means the same thing on both.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar, get_args

import msgspec

from tidings.core.content_kinds import ClientKind, ContentHead, ContentKinds, invalid, read_head
from tidings.core.errors import ErrorCode, TidingsError

# Text a client sends that the store keeps or looks up must not hold a NUL
# character: PostgreSQL's text cannot, and would fail the statement (an
# `internal` error) where SQLite answers; refused here, both answer
# `bad_frame` alike. (msgspec already refuses lone surrogates.) The check is a
# regex per field, cheap beside the rest of a frame's handling: docs/benchmarks.md,
# "Scale targets, re-measured 2026-12-01 22:35-23:20 UTC" has the figures.
NO_NUL = r"^[^\x00]*$"
# Opaque ids are short; bounding them keeps indexes and logs sane.
ID_MAX_LENGTH = 64
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=ID_MAX_LENGTH, pattern=NO_NUL)]
# A client_msg_id is the client's idempotency key (a UUID fits easily).
ClientMsgId = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=NO_NUL)]
Seq = Annotated[int, msgspec.Meta(ge=0, le=2**53)]
RequestId = Annotated[str, msgspec.Meta(max_length=128)]

# -- client -> server frames --------------------------------------------------


class ClientInfo(msgspec.Struct, frozen=True):
    name: Annotated[str, msgspec.Meta(max_length=64, pattern=NO_NUL)] = ""
    version: Annotated[str, msgspec.Meta(max_length=32, pattern=NO_NUL)] = ""
    network: Literal["wifi", "cellular", "ethernet", "unknown"] = "unknown"


class Hello(msgspec.Struct, tag="hello", tag_field="type", frozen=True):
    token: Annotated[str, msgspec.Meta(max_length=256)]
    client: ClientInfo | None = None
    epoch: str | None = None
    id: RequestId | None = None


class Sync(msgspec.Struct, tag="sync", tag_field="type", frozen=True):
    id: RequestId | None = None
    since: Annotated[str, msgspec.Meta(max_length=128)] | None = None
    cursors: dict[Id, Seq] | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=10_000)] | None = None


class Send(msgspec.Struct, tag="send", tag_field="type", frozen=True):
    conversation_id: Id
    client_msg_id: ClientMsgId
    content: msgspec.Raw
    id: RequestId | None = None


class Delivered(msgspec.Struct, tag="delivered", tag_field="type", frozen=True):
    conversation_id: Id
    seq: Seq
    id: RequestId | None = None


class Read(msgspec.Struct, tag="read", tag_field="type", frozen=True):
    conversation_id: Id
    seq: Seq
    id: RequestId | None = None


class TypingIn(msgspec.Struct, tag="typing", tag_field="type", frozen=True):
    conversation_id: Id
    state: Literal["start", "stop"]
    id: RequestId | None = None


class PresenceIn(msgspec.Struct, tag="presence", tag_field="type", frozen=True):
    status: Literal["online", "away"]
    id: RequestId | None = None


class PresenceSubscribe(msgspec.Struct, tag="presence_subscribe", tag_field="type", frozen=True):
    user_ids: Annotated[list[Id], msgspec.Meta(max_length=1000)]
    id: RequestId | None = None


class Ping(msgspec.Struct, tag="ping", tag_field="type", frozen=True):
    id: RequestId | None = None


# A device reports only the conversations where it held messages the restored
# server lacks; a few hundred is already a very active account, and the bound
# keeps one frame's store transaction small.
MAX_RECONCILE_CONVERSATIONS = 1000


class ReconcileConversation(msgspec.Struct, frozen=True):
    conversation_id: Id
    server_last_seq: Seq
    held_last_seq: Seq
    own: Seq
    others: Seq


class Reconcile(msgspec.Struct, tag="reconcile", tag_field="type", frozen=True):
    """After an epoch change: what this device held beyond the restored history."""

    epoch: Id
    conversations: Annotated[
        list[ReconcileConversation], msgspec.Meta(max_length=MAX_RECONCILE_CONVERSATIONS)
    ]
    id: RequestId | None = None


ClientFrame = (
    Hello
    | Sync
    | Send
    | Delivered
    | Read
    | TypingIn
    | PresenceIn
    | PresenceSubscribe
    | Ping
    | Reconcile
)


def frame_types(union: Any) -> frozenset[str]:
    """The ``type`` tags of a union of tagged frame structs.

    Every list of frame types (the decoder's diagnosis, the metrics labels,
    the tests) is derived from the unions with this, so that adding a frame
    to a union is the only step and no restated list can fall behind.
    """
    return frozenset(str(member.__struct_config__.tag) for member in get_args(union))


CLIENT_FRAME_TYPES = frame_types(ClientFrame)

_frame_decoder: msgspec.json.Decoder[ClientFrame] = msgspec.json.Decoder(ClientFrame)
_any_decoder = msgspec.json.Decoder()


def _ref_of(obj: dict[Any, Any]) -> str | None:
    for key in ("id", "client_msg_id"):
        value = obj.get(key)
        if isinstance(value, str):
            return value
    return None


def decode_client_frame(
    data: bytes | str, max_content_bytes: int, kinds: ContentKinds
) -> ClientFrame:
    """Decode and validate one client frame; raise :class:`FrameError` if it is rejected."""
    try:
        frame = _frame_decoder.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise _diagnose(data, exc) from None
    if isinstance(frame, Send):
        try:
            check_content(frame.content, max_content_bytes, kinds)
        except TidingsError as exc:
            ref = frame.id if frame.id is not None else frame.client_msg_id
            raise FrameError(exc.code, exc.message, ref) from None
    elif isinstance(frame, Reconcile):
        cids = [c.conversation_id for c in frame.conversations]
        if len(set(cids)) != len(cids):
            raise FrameError(ErrorCode.BAD_FRAME, "a conversation is reported twice", frame.id)
    return frame


def _diagnose(data: bytes | str, exc: Exception) -> FrameError:
    """Work out why the typed decode failed (the slow path, errors only)."""
    try:
        obj = _any_decoder.decode(data)
    except msgspec.DecodeError:
        return FrameError(ErrorCode.BAD_FRAME, "frame is not valid JSON")
    if not isinstance(obj, dict):
        return FrameError(ErrorCode.BAD_FRAME, "frame must be a JSON object")
    ref = _ref_of(obj)
    kind = obj.get("type")
    if not isinstance(kind, str):
        return FrameError(ErrorCode.BAD_FRAME, "frame needs a string field 'type'", ref)
    if kind not in CLIENT_FRAME_TYPES:
        return FrameError(ErrorCode.UNKNOWN_TYPE, f"unknown frame type {kind[:64]!r}", ref)
    return FrameError(ErrorCode.BAD_FRAME, f"invalid {kind} frame: {exc}", ref)


def check_content(
    content: msgspec.Raw | bytes, max_content_bytes: int, kinds: ContentKinds
) -> tuple[ContentHead, ClientKind]:
    """Reject content that is too large, not an object, of a kind clients may
    not send, or invalid as its kind (``kinds`` says what each kind needs);
    return its head and its kind, which the send needs next."""
    raw = bytes(content)
    if len(raw) > max_content_bytes:
        raise TidingsError(
            ErrorCode.TOO_LARGE,
            f"content is {len(raw)} bytes; the limit is {max_content_bytes}",
        )
    try:
        head = read_head(raw)
    except msgspec.DecodeError as exc:
        raise invalid(exc) from None
    kind = kinds.sendable.get(head.kind)
    if kind is None:
        raise TidingsError(
            ErrorCode.BAD_FRAME, f"content kind {head.kind[:64]!r} cannot be sent by clients"
        )
    if head.text is None and kind.needs_text:
        raise TidingsError(ErrorCode.BAD_FRAME, f"{head.kind} content needs a string field 'text'")
    if kind.validate is not None:
        kind.validate(raw)
    return head, kind


# Counters (seqs, store versions) fit in 53 bits: they travel as JSON numbers.
MAX_COUNT_DIGITS = 15


def parse_count(text: str) -> int | None:
    """A non-negative integer written in ASCII digits, else None.

    ``str.isdigit`` also accepts '²' and '①', which ``int`` refuses; and an
    unbounded number would overflow the database's 64-bit integers.
    """
    if 0 < len(text) <= MAX_COUNT_DIGITS and text.isascii() and text.isdecimal():
        return int(text)
    return None


class FrameError(TidingsError):
    """A rejected client frame, with the ``ref`` of the request it answers."""

    def __init__(self, code: ErrorCode, message: str, ref: str | None = None):
        super().__init__(code, message)
        self.ref = ref


# -- server -> client frames -------------------------------------------------


class Limits(msgspec.Struct, frozen=True):
    max_content_bytes: int
    max_frame_bytes: int
    typing_ttl_ms: int
    max_group_members: int
    send_rate_per_s: float
    send_burst: int


class Welcome(msgspec.Struct, tag="welcome", tag_field="type", frozen=True, omit_defaults=True):
    user_id: str
    device_id: str
    session_id: str
    epoch: str
    heartbeat_ms: int
    server_time: int
    limits: Limits
    id: str | None = None  # the hello's request id, if it had one


class Ack(msgspec.Struct, tag="ack", tag_field="type", frozen=True, omit_defaults=True):
    client_msg_id: str
    conversation_id: str
    seq: int
    message_id: str
    ts: int
    duplicate: bool
    id: str | None = None


class Msg(msgspec.Struct, tag="msg", tag_field="type", frozen=True):
    conversation_id: str
    seq: int
    message_id: str
    sender_id: str
    client_msg_id: str
    ts: int
    content: msgspec.Raw


class ConversationCursor(msgspec.Struct, frozen=True, omit_defaults=True):
    """A conversation in ``sync_done``; the fields after ``unread`` are left
    out at their defaults (nothing mentioned, history from seq 1, not muted)."""

    conversation_id: str
    last_seq: int
    delivered_seq: int
    read_seq: int
    unread: int
    mentions: int = 0
    history_start: int = 1
    muted: bool = False
    archived: bool = False
    pinned: bool = False


class SyncDone(msgspec.Struct, tag="sync_done", tag_field="type", frozen=True, omit_defaults=True):
    token: str
    conversations: list[ConversationCursor]
    more: bool
    id: str | None = None


class Receipt(msgspec.Struct, tag="receipt", tag_field="type", frozen=True):
    conversation_id: str
    user_id: str
    delivered_seq: int
    read_seq: int


class ReceiptSummary(msgspec.Struct, tag="receipt_summary", tag_field="type", frozen=True):
    conversation_id: str
    seq: int
    delivered_count: int
    read_count: int
    members: int


class TypingOut(msgspec.Struct, tag="typing", tag_field="type", frozen=True):
    conversation_id: str
    user_id: str
    state: Literal["start", "stop"]
    expires_ms: int  # a duration: shown for this long from receipt unless refreshed


class PresenceOut(msgspec.Struct, tag="presence", tag_field="type", frozen=True):
    user_id: str
    status: Literal["online", "away", "offline"]
    last_seen: int


class Pong(msgspec.Struct, tag="pong", tag_field="type", frozen=True, omit_defaults=True):
    id: str | None = None


class Reconnect(msgspec.Struct, tag="reconnect", tag_field="type", frozen=True):
    after_ms: int
    reason: str


class ErrorFrame(msgspec.Struct, tag="error", tag_field="type", frozen=True, omit_defaults=True):
    code: str
    message: str
    retryable: bool
    ref: str | None = None
    retry_after_ms: int | None = None


class Notice(msgspec.Struct, tag="notice", tag_field="type", frozen=True):
    """Something every session should show its user; ``restored``: the store
    was restored from a backup, and messages from ``from_ts`` to ``to_ts``
    may have been lost."""

    code: str
    from_ts: int
    to_ts: int
    text: str


class Reconciled(
    msgspec.Struct, tag="reconciled", tag_field="type", frozen=True, omit_defaults=True
):
    """The answer to ``reconcile``: the report is stored."""

    epoch: str
    conversations: int
    id: str | None = None


class HiddenFrame(msgspec.Struct, tag="hidden", tag_field="type", frozen=True):
    """The user hid (or unhid) these seqs: sent to every session of theirs."""

    conversation_id: str
    seqs: list[int]
    hidden: bool


class ConversationStateFrame(
    msgspec.Struct, tag="conversation_state", tag_field="type", frozen=True
):
    """The user's own settings of a conversation changed: sent to every session of theirs."""

    conversation_id: str
    muted_until: int | None
    muted: bool
    archived: bool
    pinned: bool


ServerFrame = (
    Welcome
    | Ack
    | Msg
    | SyncDone
    | Receipt
    | ReceiptSummary
    | TypingOut
    | PresenceOut
    | Pong
    | Reconnect
    | ErrorFrame
    | Notice
    | Reconciled
    | HiddenFrame
    | ConversationStateFrame
)
SERVER_FRAME_TYPES = frame_types(ServerFrame)

_encoder = msgspec.json.Encoder()


def encode(frame: msgspec.Struct) -> bytes:
    """Encode a server frame (or HTTP body) to JSON bytes."""
    return _encoder.encode(frame)


def error_frame(error: TidingsError, ref: str | None = None) -> ErrorFrame:
    return ErrorFrame(
        code=error.code.value,
        message=error.message,
        retryable=error.retryable,
        ref=ref if ref is not None else getattr(error, "ref", None),
        retry_after_ms=error.retry_after_ms,
    )


# -- HTTP bodies (decoded with the same rules) ---------------------------------

Username = Annotated[str, msgspec.Meta(min_length=3, max_length=32, pattern=r"^[A-Za-z0-9_.\-]+$")]
Password = Annotated[str, msgspec.Meta(min_length=8, max_length=1024)]


class RegisterBody(msgspec.Struct, frozen=True):
    username: Username
    password: Password


class LoginBody(msgspec.Struct, frozen=True):
    username: Annotated[str, msgspec.Meta(max_length=64, pattern=NO_NUL)]
    password: Annotated[str, msgspec.Meta(max_length=1024)]
    device_name: Annotated[str, msgspec.Meta(max_length=64, pattern=NO_NUL)] | None = None


class CreateConversationBody(msgspec.Struct, frozen=True):
    kind: Literal["direct", "group"]
    members: Annotated[list[Id], msgspec.Meta(max_length=10_000)]
    title: Annotated[str, msgspec.Meta(max_length=200, pattern=NO_NUL)] | None = None


class MembersBody(msgspec.Struct, frozen=True):
    user_ids: Annotated[list[Id], msgspec.Meta(min_length=1, max_length=10_000)]


class PostMessageBody(msgspec.Struct, frozen=True):
    client_msg_id: ClientMsgId
    content: msgspec.Raw


B = TypeVar("B", bound=msgspec.Struct)


def decode_body(body: bytes, kind: type[B]) -> B:
    """Decode an HTTP JSON body; a malformed one is ``bad_request``."""
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as exc:  # a subclass of DecodeError: test it first
        raise TidingsError(ErrorCode.BAD_REQUEST, f"invalid body: {exc}") from None
    except msgspec.DecodeError:
        raise TidingsError(ErrorCode.BAD_REQUEST, "body is not valid JSON") from None
