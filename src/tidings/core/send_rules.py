"""The answers a content kind's rule asks for about one send (``RuleContext``).

Each is read from the store on first use and kept for the rest of the rule,
so a plain text (no rule) reads nothing and a delete by its author reads one
entry.
"""

from __future__ import annotations

from typing import Protocol

from tidings.core.errors import ErrorCode, TidingsError
from tidings.core.models import ConversationKind, Device, Member, Message, User
from tidings.core.ports.store.conversations import ConversationStore
from tidings.core.ports.store.messages import MessageLog
from tidings.settings import Settings


class RuleStore(ConversationStore, MessageLog, Protocol):
    async def get_user(self, user_id: str) -> User | None: ...


class SendContext:
    """One send as its kind's rule sees it (implements ``content_kinds.RuleContext``)."""

    def __init__(
        self,
        store: RuleStore,
        sender: Device,
        conversation_id: str,
        now: int,
        settings: Settings,
        moderators: frozenset[str],
    ) -> None:
        self._store = store
        self._sender = sender
        self._conversation_id = conversation_id
        self._now = now
        self._settings = settings
        self._moderators = moderators
        self._entries: dict[int, Message] = {}
        self._members: list[Member] | None = None

    @property
    def sender(self) -> Device:
        return self._sender

    @property
    def conversation_id(self) -> str:
        return self._conversation_id

    @property
    def now(self) -> int:
        return self._now

    @property
    def settings(self) -> Settings:
        return self._settings

    async def entry(self, seq: int) -> Message:
        """The entry at ``seq``, if the sender may read it: before their join
        (a later joiner of a group that shows history from the join) it is
        ``NOT_FOUND`` to them, as it is in their history."""
        found = self._entries.get(seq)
        if found is None:
            visible = seq > (await self.member()).visible_after
            page = await self._store.history(self._conversation_id, seq - 1, seq + 1, 1)
            if not page or not visible:
                raise TidingsError(ErrorCode.NOT_FOUND, f"no message {seq} in this conversation")
            found = self._entries[seq] = page[0]
        return found

    async def member(self) -> Member:
        if self._members is None:
            self._members = await self._store.get_members(self._conversation_id)
        for member in self._members:
            if member.user_id == self._sender.user_id:
                return member
        raise TidingsError(ErrorCode.NOT_MEMBER, "you are not a member of this conversation")

    async def is_group(self) -> bool:
        conversation = await self._store.get_conversation(self._conversation_id)
        return conversation is not None and conversation.kind is ConversationKind.GROUP

    async def is_moderator(self) -> bool:
        if not self._moderators:
            return False
        user = await self._store.get_user(self._sender.user_id)
        return user is not None and user.username.lower() in self._moderators
