"""Cursors (what each member and device has been given and has read), the
per-device conversation listing and receipt counts.

Contracts that the core relies on:

- Cursors only move forward and never past ``last_seq``.
- Cursor moves take effect in the order their calls were made, like appends
  (:mod:`.messages`).
- ``version`` is a store-wide counter bumped by every append; a conversation
  remembers the version of its last append, which makes "what changed since
  token T" one indexed comparison (sync cost grows with what changed).
"""

from __future__ import annotations

from typing import Protocol

from tidings.core.models import ConversationState, CursorState, ReceiptCounts


class CursorStore(Protocol):
    async def advance_cursors(
        self,
        conversation_id: str,
        user_id: str,
        device_id: str,
        delivered_seq: int | None,
        read_seq: int | None,
    ) -> CursorState:
        """Move the device's and the member's cursors forward (never back, and
        clamped to ``last_seq``); ``read`` implies ``delivered``. ``NOT_MEMBER``
        if the user is not a member.
        """
        ...

    async def list_conversations(
        self, user_id: str, device_id: str, changed_after: int = 0
    ) -> tuple[list[ConversationState], int]:
        """The user's conversations whose version is above ``changed_after``
        (all with 0), ordered by version, and the store's current version.
        Each with the counts, ``history_start`` and member settings that
        :class:`~tidings.core.models.ConversationState` describes; counts stop
        at :data:`~tidings.core.models.UNREAD_CAP`.
        """
        ...

    async def receipt_counts(self, conversation_id: str, seq: int) -> ReceiptCounts:
        """How many members have delivered / read at least ``seq``."""
        ...
