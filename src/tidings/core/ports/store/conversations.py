"""Conversations and their membership.

A membership change is also a message (an event appended at the next seq in
the same transaction), so members learn of it in order with everything else.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from msgspec import UNSET, UnsetType

from tidings.core.models import (
    AppendResult,
    Conversation,
    ConversationKind,
    HistoryVisibility,
    Member,
    MemberSettings,
    NewMessage,
)


class ConversationStore(Protocol):
    async def create_conversation(
        self,
        kind: ConversationKind,
        creator_id: str,
        member_ids: Sequence[str],
        title: str | None,
        now: int,
    ) -> tuple[Conversation, bool]:
        """Create a conversation; the creator is a member (and a group's admin).

        ``member_ids`` are the others (unknown users: ``NOT_FOUND``). A direct
        conversation is unique per pair: asking again returns the existing one
        with ``created=False``.
        """
        ...

    async def get_conversation(self, conversation_id: str) -> Conversation | None: ...

    async def get_members(self, conversation_id: str) -> list[Member]:
        """Current members with their cursors, ordered by user_id."""
        ...

    async def change_members(
        self,
        conversation_id: str,
        add: Sequence[str],
        remove: Sequence[str],
        event: NewMessage,
    ) -> AppendResult | None:
        """Add/remove members and append ``event`` (its content describes the
        change) in one transaction. Adding a member already present or removing
        an absent one is a no-op; when nothing changes, nothing is appended and
        None is returned. Unknown users: ``NOT_FOUND``. A member added to a
        group whose history is ``joined`` gets ``visible_after`` = the seq
        before the event (reads start at the event); with ``full``, 0.
        """
        ...

    async def update_conversation(
        self,
        conversation_id: str,
        *,
        title: str | UnsetType = UNSET,
        history: HistoryVisibility | UnsetType = UNSET,
        retention_days: int | UnsetType | None = UNSET,
    ) -> Conversation:
        """Change the given settings (the others stay); ``NOT_FOUND`` if unknown."""
        ...

    async def update_member_settings(
        self,
        conversation_id: str,
        user_id: str,
        *,
        muted_until: int | UnsetType | None = UNSET,
        archived: bool | UnsetType = UNSET,
        pinned: bool | UnsetType = UNSET,
    ) -> MemberSettings:
        """Change the given fields of one member's settings and return them all
        (``NOT_MEMBER`` if the user is not a member). Two devices changing
        different fields at once both take effect."""
        ...
