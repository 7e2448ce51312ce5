"""Response bodies of the HTTP API (requests are in ``tidings.core.frames``)."""

from __future__ import annotations

import msgspec

from tidings.core.models import Conversation, ConversationState, Member, Message, User
from tidings.core.view import ViewEntry


class ErrorDetail(msgspec.Struct, frozen=True, omit_defaults=True):
    code: str
    message: str
    retryable: bool
    retry_after_ms: int | None = None


class ErrorBody(msgspec.Struct, frozen=True):
    error: ErrorDetail


class RegisterOut(msgspec.Struct, frozen=True):
    user_id: str


class LoginOut(msgspec.Struct, frozen=True):
    token: str
    user_id: str
    device_id: str


class UserOut(msgspec.Struct, frozen=True):
    user_id: str
    username: str
    created_at: int


class MemberOut(msgspec.Struct, frozen=True):
    user_id: str
    role: str
    delivered_seq: int
    read_seq: int


class ConversationOut(msgspec.Struct, frozen=True):
    conversation_id: str
    kind: str
    title: str | None
    created_by: str
    created_at: int
    last_seq: int
    members: list[MemberOut]
    history: str = "joined"
    retention_days: int | None = None


class ConversationSummaryOut(msgspec.Struct, frozen=True):
    conversation_id: str
    kind: str
    title: str | None
    last_seq: int
    delivered_seq: int
    read_seq: int
    unread: int
    mentions: int = 0
    history_start: int = 1
    muted: bool = False
    muted_until: int | None = None
    archived: bool = False
    pinned: bool = False


class ViewListOut(msgspec.Struct, frozen=True):
    """``?view=current``: one entry per message a person sees (``core/view.py``)."""

    messages: list[ViewEntry]


class ConversationListOut(msgspec.Struct, frozen=True):
    conversations: list[ConversationSummaryOut]


class MessageOut(msgspec.Struct, frozen=True):
    conversation_id: str
    seq: int
    message_id: str
    sender_id: str
    client_msg_id: str
    ts: int
    content: msgspec.Raw


class MessageListOut(msgspec.Struct, frozen=True):
    messages: list[MessageOut]


class AckOut(msgspec.Struct, frozen=True):
    conversation_id: str
    client_msg_id: str
    seq: int
    message_id: str
    ts: int
    duplicate: bool


class MembersChangedOut(msgspec.Struct, frozen=True):
    message: MessageOut | None


class MemberListOut(msgspec.Struct, frozen=True):
    members: list[MemberOut]


class HealthOut(msgspec.Struct, frozen=True):
    status: str
    checks: dict[str, str] = {}


def user_out(user: User) -> UserOut:
    return UserOut(user.user_id, user.username, user.created_at)


def member_out(member: Member) -> MemberOut:
    return MemberOut(member.user_id, member.role.value, member.delivered_seq, member.read_seq)


def conversation_out(conv: Conversation, members: list[Member]) -> ConversationOut:
    return ConversationOut(
        conversation_id=conv.conversation_id,
        kind=conv.kind.value,
        title=conv.title,
        created_by=conv.created_by,
        created_at=conv.created_at,
        last_seq=conv.last_seq,
        members=[member_out(m) for m in members],
        history=conv.history.value,
        retention_days=conv.retention_days,
    )


def summary_out(state: ConversationState, now: int) -> ConversationSummaryOut:
    settings = state.settings
    return ConversationSummaryOut(
        conversation_id=state.conversation_id,
        kind=state.kind.value,
        title=state.title,
        last_seq=state.last_seq,
        delivered_seq=state.delivered_seq,
        read_seq=state.read_seq,
        unread=state.unread,
        mentions=state.mentions,
        history_start=state.history_start,
        muted=settings.muted(now),
        muted_until=settings.muted_until,
        archived=settings.archived,
        pinned=settings.pinned,
    )


def message_out(message: Message) -> MessageOut:
    return MessageOut(
        conversation_id=message.conversation_id,
        seq=message.seq,
        message_id=message.message_id,
        sender_id=message.sender_id,
        client_msg_id=message.client_msg_id,
        ts=message.ts,
        content=msgspec.Raw(message.content),
    )
