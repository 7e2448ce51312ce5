"""The notifier: a change-log worker that turns stored messages into waiting
notifications (``PushStore.note_messages``), off the send path.

It only records; the dispatcher sends once a notification is due. Keeping the
two apart is what lets a message wait ``delay_ms`` for its device's
acknowledgement without holding the change log back, and what makes a
restart lose nothing: what waits is in the store, not in a task.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from tidings.core.content_kinds import ContentKind, read_head
from tidings.core.ids import now_ms
from tidings.core.models import ChangeBatch, Message
from tidings.features.push.port import Noted, PushStore


class Notifier:
    name = "push"

    def __init__(
        self,
        store: PushStore,
        kinds: dict[str, ContentKind[Any]],
        delay_ms: int,
        max_age_ms: int,
        wake: Callable[[], None],
    ) -> None:
        self._store = store
        self._kinds = kinds
        self._delay_ms = delay_ms
        self._max_age_ms = max_age_ms
        self._wake = wake

    def noted(self, message: Message, now: int) -> Noted | None:
        """What a message notifies, if anything: a kind clients send that is an
        entry of its own (not an edit, delete or reaction, nor a membership
        change), and not older than ``max_age_s``."""
        if now - message.ts > self._max_age_ms:
            return None
        try:
            head = read_head(message.content)
        except msgspec.DecodeError:
            return None
        kind = self._kinds.get(head.kind)
        if kind is None or kind.sent_by != "clients" or kind.targets:
            return None
        return Noted(
            message.conversation_id,
            message.seq,
            message.sender_id,
            message.ts,
            frozenset(head.mentions or ()),
            head.mention_all,
        )

    async def handle(self, batch: ChangeBatch) -> None:
        if not batch.changes:
            return
        now = now_ms()
        # Only conversations where someone subscribed are worth parsing: in a
        # deployment without push, a batch costs this one indexed read.
        subscribed = await self._store.subscribed(
            sorted({c.message.conversation_id for c in batch.changes})
        )
        noted = [
            n
            for c in batch.changes
            if c.message.conversation_id in subscribed
            and (n := self.noted(c.message, now)) is not None
        ]
        if noted and await self._store.note_messages(noted, self._delay_ms, now):
            self._wake()
