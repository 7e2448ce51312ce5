"""Which users are connected to this node, and which bus topics that needs.

The node listens to a conversation's topic while at least one local user is a
member of it, and to each local user's own topic (to learn of conversations
they join). Topics are reference-counted per user, not per connection, so a
user with three devices on one node costs one subscription per conversation.
"""

from __future__ import annotations

from collections.abc import Iterable

from tidings.core.events import conversation_topic, user_topic
from tidings.core.ports.bus import Bus
from tidings.gateway.connection import Connection


class LocalRegistry:
    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self._by_user: dict[str, list[Connection]] = {}
        self._user_conversations: dict[str, set[str]] = {}
        self._topic_refs: dict[str, int] = {}
        self.next_seq: dict[str, int] = {}

    def connections_of(self, user_id: str) -> list[Connection] | None:
        return self._by_user.get(user_id)

    def write_to_user(self, user_id: str, frame: bytes) -> int:
        """Write one framed frame to every local connection of a user; how many took it."""
        return sum(1 for conn in tuple(self._by_user.get(user_id, ())) if conn.write_frame(frame))

    def all_connections(self) -> list[Connection]:
        return [c for conns in self._by_user.values() for c in conns]

    def __len__(self) -> int:
        return sum(len(c) for c in self._by_user.values())

    def is_local(self, user_id: str) -> bool:
        return user_id in self._by_user

    async def add(self, conn: Connection, conversations: Iterable[tuple[str, int]]) -> None:
        """Register an open connection; the first of a user subscribes their topics.

        ``conversations`` are the user's (conversation_id, last_seq) as read
        before subscribing.
        """
        user_id = conn.user_id
        conns = self._by_user.get(user_id)
        if conns is not None:
            conns.append(conn)
            return
        self._by_user[user_id] = [conn]
        convs: set[str] = set()
        self._user_conversations[user_id] = convs
        await self._ref(user_topic(user_id))
        for cid, last_seq in conversations:
            convs.add(cid)
            await self._ref_conversation(cid, last_seq)

    async def remove(self, conn: Connection) -> None:
        """Forget a connection (idempotent); the last of a user drops their topics."""
        if conn.device is None:
            return
        user_id = conn.user_id
        conns = self._by_user.get(user_id)
        if conns is None or conn not in conns:
            return
        conns.remove(conn)
        if conns:
            return
        del self._by_user[user_id]
        await self._unref(user_topic(user_id))
        for cid in self._user_conversations.pop(user_id, set()):
            await self._unref_conversation(cid)

    async def joined(self, user_id: str, conversation_id: str, after_seq: int) -> None:
        convs = self._user_conversations.get(user_id)
        if convs is None or conversation_id in convs:
            return
        convs.add(conversation_id)
        await self._ref_conversation(conversation_id, after_seq)

    async def left(self, user_id: str, conversation_id: str) -> None:
        convs = self._user_conversations.get(user_id)
        if convs is None or conversation_id not in convs:
            return
        convs.discard(conversation_id)
        await self._unref_conversation(conversation_id)

    async def _ref_conversation(self, cid: str, last_seq: int) -> None:
        if cid not in self.next_seq or self.next_seq[cid] <= last_seq:
            self.next_seq[cid] = last_seq + 1
        await self._ref(conversation_topic(cid))

    async def _unref_conversation(self, cid: str) -> None:
        await self._unref(conversation_topic(cid))
        if conversation_topic(cid) not in self._topic_refs:
            self.next_seq.pop(cid, None)

    async def _ref(self, topic: str) -> None:
        count = self._topic_refs.get(topic, 0)
        self._topic_refs[topic] = count + 1
        if count == 0:
            await self._bus.subscribe(topic)

    async def _unref(self, topic: str) -> None:
        count = self._topic_refs.get(topic, 0) - 1
        if count > 0:
            self._topic_refs[topic] = count
            return
        self._topic_refs.pop(topic, None)
        await self._bus.unsubscribe(topic)
