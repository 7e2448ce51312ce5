"""A node-local cache of who is in which conversation, for fan-out.

Fan-out happens for every message, so asking the store for the member list
each time would put a query on the hot path. The cache is filled on first use
and invalidated by the ``membership_changed`` flag of the message event that
records the change, which every node receives on the bus; it is an LRU so that
memory follows active conversations.
"""

from __future__ import annotations

from collections import OrderedDict

from tidings.core.ports.store.conversations import ConversationStore


class MemberCache:
    def __init__(self, store: ConversationStore, capacity: int) -> None:
        self._store = store
        self._capacity = capacity
        self._entries: OrderedDict[str, frozenset[str]] = OrderedDict()

    def peek(self, conversation_id: str) -> frozenset[str] | None:
        """The cached members, or None if they must be loaded."""
        members = self._entries.get(conversation_id)
        if members is not None:
            self._entries.move_to_end(conversation_id)
        return members

    async def get(self, conversation_id: str) -> frozenset[str]:
        members = self.peek(conversation_id)
        if members is None:
            rows = await self._store.get_members(conversation_id)
            members = frozenset(m.user_id for m in rows)
            self._entries[conversation_id] = members
            if len(self._entries) > self._capacity:
                self._entries.popitem(last=False)
        return members

    def invalidate(self, conversation_id: str) -> None:
        self._entries.pop(conversation_id, None)
