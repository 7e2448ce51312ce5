"""The path and query parameters of the HTTP API, one Struct per route.

``tidings.http.routes.decode_params`` validates requests with these types and
``tidings.http.openapi`` documents them; the bounds are those of the frames
(``Id``, ``Seq``), so a value means the same over HTTP and WebSocket.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from tidings.core.frames import NO_NUL, Id, Seq

# The page size of history when a request gives none (or 0).
HISTORY_LIMIT = 50


class UserPath(msgspec.Struct, frozen=True):
    user_id: Id


class FindUserQuery(msgspec.Struct, frozen=True):
    username: Annotated[
        str,
        msgspec.Meta(
            min_length=1, max_length=64, pattern=NO_NUL, description="The exact username."
        ),
    ]


class ConversationPath(msgspec.Struct, frozen=True):
    cid: Id


class MemberPath(msgspec.Struct, frozen=True):
    cid: Id
    user_id: Id


class HistoryParams(msgspec.Struct, frozen=True):
    cid: Id
    after_seq: Annotated[Seq, msgspec.Meta(description="Only messages after this seq.")] = 0
    before_seq: (
        Annotated[
            Seq,
            msgspec.Meta(description="Only messages before this seq (newest first if alone)."),
        ]
        | None
    ) = None
    limit: Annotated[
        Seq,
        msgspec.Meta(description=f"At most this many (0: {HISTORY_LIMIT}); the server caps it."),
    ] = HISTORY_LIMIT
    view: Annotated[
        Literal["stream", "current"],
        msgspec.Meta(
            description="stream: every entry as stored; current: one per message a person"
            " sees, with edits, deletes and reactions folded in"
        ),
    ] = "stream"


class ReceiptsParams(msgspec.Struct, frozen=True):
    cid: Id
    read_seq: (
        Annotated[Seq, msgspec.Meta(description="Only members who have read up to this seq.")]
        | None
    ) = None
