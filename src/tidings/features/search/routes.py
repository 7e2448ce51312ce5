"""``GET /v1/search`` (docs/protocol.md, "Search")."""

from __future__ import annotations

from typing import Annotated

import msgspec
from aiohttp import web

from tidings.core.errors import ErrorCode
from tidings.core.frames import NO_NUL, Id
from tidings.features.search.query import MAX_QUERY_CHARS, parse
from tidings.features.search.service import SearchService
from tidings.http.respond import json_response
from tidings.http.routes import AnyRoute, Call, Route

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
Time = Annotated[
    str,
    msgspec.Meta(
        max_length=40,
        pattern=NO_NUL,
        description="ms since the epoch, a date (2026-12-01: midnight UTC) or an ISO 8601 time",
    ),
]


class SearchParams(msgspec.Struct, frozen=True):
    q: Annotated[
        str,
        msgspec.Meta(
            min_length=1,
            max_length=MAX_QUERY_CHARS,
            pattern=NO_NUL,
            description='Words, "phrases", -excluded, from:USER_ID, in:CONVERSATION_ID,'
            " before:DATE, after:DATE",
        ),
    ]
    conversation_id: Id | None = None
    sender_id: Id | None = None
    after: (
        Annotated[Time, msgspec.Meta(description="Only messages at or after this time.")] | None
    ) = None
    before: Annotated[Time, msgspec.Meta(description="Only messages before this time.")] | None = (
        None
    )
    limit: Annotated[
        int,
        msgspec.Meta(ge=1, le=MAX_LIMIT, description="Results per page (the server may cap it)."),
    ] = DEFAULT_LIMIT
    cursor: Annotated[str, msgspec.Meta(max_length=512, pattern=NO_NUL)] | None = None


class SearchResultOut(msgspec.Struct, frozen=True):
    conversation_id: str
    seq: int
    sender_id: str
    ts: int
    snippet: Annotated[str, msgspec.Meta(description="HTML-escaped text, hits in <mark>")]


class SearchOut(msgspec.Struct, frozen=True):
    results: list[SearchResultOut]
    next_cursor: str | None
    degraded: Annotated[
        bool,
        msgspec.Meta(
            description="Answered by the store's slower path (index being rebuilt, or dates"
            " older than the index keeps): no stemming, accent or CJK folding, edits"
        ),
    ]


class SearchRoutes:
    def __init__(self, service: SearchService) -> None:
        self._service = service

    def routes(self) -> list[AnyRoute]:
        return [
            Route(
                "GET",
                "/v1/search",
                "Search the messages you can read",
                self.search,
                SearchParams,
                None,
                {200: SearchOut},
                frozenset({ErrorCode.NOT_MEMBER, ErrorCode.UNAVAILABLE}),
            )
        ]

    async def search(self, call: Call[SearchParams, None]) -> web.Response:
        params = call.params
        query = parse(
            params.q, params.conversation_id, params.sender_id, params.after, params.before
        )
        page = await self._service.search(call.caller.user_id, query, params.limit, params.cursor)
        return json_response(msgspec.convert(page, SearchOut, from_attributes=True))
