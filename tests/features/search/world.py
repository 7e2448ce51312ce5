"""A real store and a search engine on it, for the port's conformance suite
and the property test: users, conversations and messages are written with
the store's own calls, and the index is brought up to date by the keeper
catching up from the change log (no timing involved)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from tests.conftest import make_settings
from tidings.app import BUILT_IN, open_store
from tidings.core.content_kinds import ContentKinds
from tidings.core.models import ConversationKind, HistoryVisibility, NewMessage
from tidings.core.ports.store.composite import Store
from tidings.features.host import content_kinds_of, schema_of
from tidings.features.search import index_for
from tidings.features.search.keeper import Keeper
from tidings.features.search.metrics import SearchMetrics
from tidings.features.search.port import Generation, Hit, Search, SearchIndex
from tidings.features.search.query import Cursor, parse
from tidings.features.search.settings import SearchSettings
from tidings.observability.metrics import Metrics

_ids = itertools.count()
DAY_MS = 86_400_000
NOW = 1_796_000_000_000
"""Messages are stamped around this time (2026-12), so dates are known."""


@dataclass
class World:
    store: Store
    index: SearchIndex
    keeper: Keeper
    kinds: ContentKinds
    generation: Generation | None = None
    users: dict[str, str] = field(default_factory=dict)

    async def user(self) -> str:
        user = await self.store.create_user(f"u{next(_ids)}", "x", NOW)
        return user.user_id

    async def conversation(
        self, creator: str, members: list[str], kind: str = "group", history: str = "joined"
    ) -> str:
        conversation, _ = await self.store.create_conversation(
            ConversationKind(kind), creator, members, "t", NOW
        )
        if history != "joined":
            await self.store.update_conversation(
                conversation.conversation_id, history=HistoryVisibility(history)
            )
        return conversation.conversation_id

    async def send(self, cid: str, sender: str, content: dict[str, Any], ts: int = NOW) -> int:
        head_kind = content.get("kind", "text")
        result = await self.store.append(
            NewMessage(
                cid,
                sender,
                "d_test",
                f"c{next(_ids)}",
                msgspec.json.encode(content),
                ts,
                kind=None if head_kind == "text" else head_kind,
                target=content.get("target"),
                redacts=head_kind == "delete",
            )
        )
        return result.message.seq

    async def text(self, cid: str, sender: str, text: str, ts: int = NOW) -> int:
        return await self.send(cid, sender, {"text": text}, ts)

    async def add(self, cid: str, by: str, users: list[str]) -> None:
        await self._change_members(cid, by, users, "member_added")

    async def remove(self, cid: str, by: str, users: list[str]) -> None:
        await self._change_members(cid, by, users, "member_removed")

    async def _change_members(self, cid: str, by: str, users: list[str], kind: str) -> None:
        event = msgspec.json.encode({"kind": kind, "user_ids": users, "by": by})
        added = kind == "member_added"
        await self.store.change_members(
            cid,
            users if added else [],
            [] if added else users,
            NewMessage(cid, by, "d_test", f"c{next(_ids)}", event, NOW, kind=kind),
        )

    async def index_all(self) -> Generation:
        """Bring the live generation up to the store's head (building one if none)."""
        live = await self.index.live()
        self.generation = await self.keeper.rebuild(base=live)
        return self.generation

    async def find(
        self, user: str, q: str, limit: int = 50, cursor: Cursor | None = None, **filters: Any
    ) -> list[Hit]:
        """One page of the index's answer (indexing everything first)."""
        generation = await self.index_all()
        query = parse(q, **filters)
        return await self.index.search(generation, Search(user, query, limit, cursor))

    async def found(self, user: str, q: str, **filters: Any) -> set[tuple[str, int]]:
        return {(h.conversation_id, h.seq) for h in await self.find(user, q, **filters)}

    async def scanned(self, user: str, q: str, **filters: Any) -> set[tuple[str, int]]:
        hits = await self.index.scan(Search(user, parse(q, **filters), 50))
        return {(h.conversation_id, h.seq) for h in hits}


async def open_world(tmp_path: Path, url: str | None) -> AsyncIterator[World]:
    overrides = {} if url is None else {"store": url}
    settings = make_settings(tmp_path, **overrides)
    store = open_store(settings, schema_of(BUILT_IN))
    await store.start()
    own = SearchSettings()
    index = index_for(settings, own, store.engine_access())
    await index.start()
    kinds = content_kinds_of(BUILT_IN)
    keeper = Keeper(index, store, kinds, own, SearchMetrics(Metrics()))
    try:
        yield World(store, index, keeper, kinds)
    finally:
        await index.close()
        await store.close()
