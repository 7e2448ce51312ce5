"""A member's own view of a conversation (hidden messages, mute, archive, pin)
and a group's settings (title, history for later joiners, retention).

A change of the user's own state is sent at once to every live session of
theirs (``UserFrameEvent``), so their other devices agree without polling;
devices that were offline read it from the listing and ``GET .../hidden``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

import msgspec
from msgspec import UNSET, UnsetType

from tidings.core.errors import ErrorCode, TidingsError
from tidings.core.events import UserFrameEvent, user_topic
from tidings.core.frames import ConversationStateFrame, HiddenFrame, encode
from tidings.core.ids import now_ms
from tidings.core.models import (
    Conversation,
    ConversationKind,
    Device,
    HistoryVisibility,
    Member,
    MemberSettings,
    Role,
)
from tidings.core.ports.store.conversations import ConversationStore
from tidings.core.ports.store.hidden import HiddenStore
from tidings.core.publisher import Publisher
from tidings.core.service import ChatService

MAX_HIDE = 500
"""Most seqs one hide call names (an "delete for me" of a selection, not of a history)."""


class MessagingStore(ConversationStore, HiddenStore, Protocol):
    """What this feature uses of the store."""


def state_frame(conversation_id: str, settings: MemberSettings) -> ConversationStateFrame:
    return ConversationStateFrame(
        conversation_id,
        settings.muted_until,
        settings.muted(now_ms()),
        settings.archived,
        settings.pinned,
    )


class MessagingService:
    def __init__(self, store: MessagingStore, chat: ChatService, publisher: Publisher) -> None:
        self._store = store
        self._chat = chat
        self._publisher = publisher

    async def _tell_devices(self, user_id: str, frame: msgspec.Struct) -> None:
        await self._publisher.publish(user_topic(user_id), UserFrameEvent(user_id, encode(frame)))

    async def set_hidden(
        self, device: Device, conversation_id: str, seqs: Sequence[int], hidden: bool
    ) -> list[int]:
        """Hide or unhide entries for the user (members only; seqs the
        conversation holds); every session of the user hears of it."""
        conversation, _ = await self._chat.get_conversation(device.user_id, conversation_id)
        wanted = sorted(set(seqs))
        if len(wanted) > MAX_HIDE:
            raise TidingsError(ErrorCode.BAD_REQUEST, f"at most {MAX_HIDE} seqs at a time")
        beyond = [seq for seq in wanted if seq > conversation.last_seq]
        if beyond:
            raise TidingsError(ErrorCode.NOT_FOUND, f"no message {beyond[0]} in this conversation")
        result = await self._store.set_hidden(device.user_id, conversation_id, wanted, hidden)
        await self._tell_devices(device.user_id, HiddenFrame(conversation_id, wanted, hidden))
        return result

    async def hidden(self, user_id: str, conversation_id: str) -> list[int]:
        await self._chat.get_members(user_id, conversation_id)
        return await self._store.hidden_seqs(user_id, conversation_id)

    async def update_member_settings(
        self,
        device: Device,
        conversation_id: str,
        *,
        muted_until: int | UnsetType | None = UNSET,
        archived: bool | UnsetType = UNSET,
        pinned: bool | UnsetType = UNSET,
    ) -> MemberSettings:
        if muted_until == 0:
            muted_until = None
        settings = await self._store.update_member_settings(
            conversation_id,
            device.user_id,
            muted_until=muted_until,
            archived=archived,
            pinned=pinned,
        )
        await self._tell_devices(device.user_id, state_frame(conversation_id, settings))
        return settings

    async def update_conversation(
        self,
        device: Device,
        conversation_id: str,
        *,
        title: str | UnsetType = UNSET,
        history: Literal["joined", "full"] | UnsetType = UNSET,
        retention_days: int | UnsetType | None = UNSET,
    ) -> tuple[Conversation, list[Member]]:
        """Group admins change a group's settings; in a direct conversation
        either member may set retention, and there is no title or history."""
        conversation, members = await self._chat.get_conversation(device.user_id, conversation_id)
        if conversation.kind is ConversationKind.DIRECT:
            if not isinstance(title, UnsetType) or not isinstance(history, UnsetType):
                raise TidingsError(
                    ErrorCode.BAD_REQUEST, "a direct conversation has no title or history setting"
                )
        elif not any(m.user_id == device.user_id and m.role is Role.ADMIN for m in members):
            raise TidingsError(ErrorCode.FORBIDDEN, "only a group admin can change its settings")
        updated = await self._store.update_conversation(
            conversation_id,
            title=title,
            history=history if isinstance(history, UnsetType) else HistoryVisibility(history),
            retention_days=retention_days,
        )
        return updated, members
