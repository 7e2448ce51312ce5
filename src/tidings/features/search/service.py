"""The search call's rules: who may search where, which path answers, pages.

The index answers when the keeper has a usable generation; otherwise (a
rebuild running) and for dates older than the index's window, the store's
slower path does, and the answer says ``degraded``. A cursor keeps its page
on the path that began it, so a rebuild finishing between two pages does not
repeat or skip results; an index cursor while the index is being rebuilt is
``unavailable`` (retryable).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from tidings.core.errors import ErrorCode, TidingsError
from tidings.core.ids import now_ms
from tidings.core.service import ChatService
from tidings.features.search.keeper import Keeper
from tidings.features.search.metrics import SearchMetrics
from tidings.features.search.port import GenerationGone, Hit, IndexCorrupt, Search
from tidings.features.search.query import Cursor, Query, decode_cursor, encode_cursor
from tidings.features.search.settings import SearchSettings
from tidings.features.search.text import snippet

INDEX = "index"
STORE = "store"


@dataclass(frozen=True)
class Result:
    conversation_id: str
    seq: int
    sender_id: str
    ts: int
    snippet: str


@dataclass(frozen=True)
class Page:
    results: list[Result]
    next_cursor: str | None
    degraded: bool


class SearchService:
    def __init__(
        self, keeper: Keeper, chat: ChatService, settings: SearchSettings, metrics: SearchMetrics
    ) -> None:
        self._keeper = keeper
        self._chat = chat
        self._settings = settings
        self._metrics = metrics

    async def search(self, user_id: str, query: Query, limit: int, cursor: str | None) -> Page:
        """A page of what ``user_id`` may read that matches ``query``."""
        started = time.perf_counter()
        if query.conversation_id is not None:
            # A conversation the caller is not in answers as history does.
            await self._chat.history_start(user_id, query.conversation_id)
        after = None if cursor is None else decode_cursor(cursor, query)
        search = Search(user_id, query, min(limit, self._settings.page_limit) + 1, after)
        source, hits = await self._hits(search)
        self._metrics.queries.labels(source).inc()
        page = self._page(search, source, hits)
        self._metrics.latency.observe(time.perf_counter() - started)
        return page

    def _before_window(self, query: Query) -> bool:
        days = self._settings.index_days
        window = now_ms() - days * 86_400_000
        return days > 0 and query.before is not None and query.before <= window

    async def _hits(self, search: Search) -> tuple[str, list[Hit]]:
        cursor = search.after
        on_store = self._before_window(search.query) if cursor is None else cursor.source == STORE
        if not on_store:
            generation = await self._keeper.current()
            if generation is not None:
                try:
                    return INDEX, await self._keeper.index.search(generation, search)
                except IndexCorrupt as exc:
                    self._keeper.damaged(exc)
                except GenerationGone:
                    pass  # promoted away between the two calls: the store answers this once
            if cursor is not None:
                raise TidingsError(
                    ErrorCode.UNAVAILABLE, "the search index is being rebuilt; search again"
                )
        return STORE, await self._keeper.index.scan(search)

    def _page(self, search: Search, source: str, hits: list[Hit]) -> Page:
        words = search.query.words()
        shown = hits[: search.limit - 1]
        next_cursor = None
        if len(hits) == search.limit:
            last = shown[-1]
            next_cursor = encode_cursor(
                Cursor(
                    source,
                    search.query.fingerprint(),
                    last.score,
                    last.conversation_id,
                    last.seq,
                )
            )
        results = [
            Result(h.conversation_id, h.seq, h.sender_id, h.ts, snippet(h.text, words))
            for h in shown
        ]
        return Page(results, next_cursor, source == STORE)
