"""The admin call: ``GET /v1/admin/trace/{id}``, the lifecycle ``tidings
trace`` prints, for the server's moderators.

There is no admin role yet; the ``moderators`` setting already names the
people the server trusts with every conversation (they may delete any
message in theirs), and a trace shows only metadata (ids, times, nodes,
networks), never content. So the call takes a signed-in user's token and
answers ``forbidden`` to anyone who is not a moderator; with no moderators
set nobody may call it, and ``tidings trace`` on the server's host is the way.
"""

from __future__ import annotations

import msgspec
from aiohttp import web

from tidings.core.errors import ErrorCode, TidingsError
from tidings.core.frames import ClientMsgId
from tidings.core.ports.store.accounts import AccountStore
from tidings.features.trace.lifecycle import Stage, TraceReader
from tidings.http.respond import json_response
from tidings.http.routes import AnyRoute, Call, Route


class TracePath(msgspec.Struct, frozen=True):
    id: ClientMsgId
    """A message id or a client_msg_id."""


class TraceOut(msgspec.Struct, frozen=True):
    stages: list[Stage]
    """Every stage of every message the id names, as ``tidings trace --json``
    prints them (each message's stages in time order)."""


class TraceRoutes:
    def __init__(self, reader: TraceReader, accounts: AccountStore, moderators: str) -> None:
        self._reader = reader
        self._accounts = accounts
        self._admins = frozenset(
            name.strip().lower() for name in moderators.split(",") if name.strip()
        )

    def routes(self) -> list[AnyRoute]:
        return [
            Route(
                "GET",
                "/v1/admin/trace/{id}",
                "A message's lifecycle across nodes (the server's moderators only)",
                self.trace,
                TracePath,
                None,
                {200: TraceOut},
                frozenset({ErrorCode.FORBIDDEN, ErrorCode.NOT_FOUND, ErrorCode.UNAVAILABLE}),
            )
        ]

    async def trace(self, call: Call[TracePath, None]) -> web.StreamResponse:
        user = await self._accounts.get_user(call.caller.user_id)
        if user is None or user.username.lower() not in self._admins:
            raise TidingsError(ErrorCode.FORBIDDEN, "traces are for the server's moderators")
        found = await self._reader.trace(call.params.id)
        if not found:
            raise TidingsError(
                ErrorCode.NOT_FOUND, "no traced message has this id (not sampled, or purged)"
            )
        return json_response(TraceOut([stage for stages in found for stage in stages]))
