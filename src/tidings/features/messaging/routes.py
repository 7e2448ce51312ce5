"""The HTTP routes of a member's own view and of group settings."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from aiohttp import web
from msgspec import UNSET, UnsetType

from tidings.core.errors import ErrorCode
from tidings.core.frames import NO_NUL
from tidings.features.messaging.service import MAX_HIDE, MessagingService, state_frame
from tidings.http import schemas
from tidings.http.params import ConversationPath
from tidings.http.respond import json_response
from tidings.http.routes import AnyRoute, Call, Route

E = ErrorCode
MEMBERS_ONLY = frozenset({E.UNAVAILABLE, E.NOT_MEMBER})
EntrySeq = Annotated[int, msgspec.Meta(ge=1, le=2**53)]


class HideBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    seqs: Annotated[list[EntrySeq], msgspec.Meta(min_length=1, max_length=MAX_HIDE)]
    hidden: bool = True


class HiddenOut(msgspec.Struct, frozen=True):
    conversation_id: str
    seqs: list[int]


class MemberStateBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    muted_until: (
        Annotated[
            int,
            msgspec.Meta(
                ge=-1, description="ms since the epoch; -1: for ever; 0 or null: not muted"
            ),
        ]
        | UnsetType
        | None
    ) = UNSET
    archived: bool | UnsetType = UNSET
    pinned: bool | UnsetType = UNSET


class MemberStateOut(msgspec.Struct, frozen=True):
    conversation_id: str
    muted_until: int | None
    muted: bool
    archived: bool
    pinned: bool


class ConversationSettingsBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    title: (
        Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=NO_NUL)] | UnsetType
    ) = UNSET
    history: Literal["joined", "full"] | UnsetType = UNSET
    retention_days: (
        Annotated[int, msgspec.Meta(ge=0, le=36_500, description="0: keep for ever")]
        | UnsetType
        | None
    ) = UNSET


class MessagingRoutes:
    def __init__(self, service: MessagingService) -> None:
        self._service = service

    def routes(self) -> list[AnyRoute]:
        return [
            Route(
                "PATCH",
                "/v1/conversations/{cid}",
                "Change a conversation's settings (group admins)",
                self.update_conversation,
                ConversationPath,
                ConversationSettingsBody,
                {200: schemas.ConversationOut},
                MEMBERS_ONLY | {E.FORBIDDEN},
            ),
            Route(
                "PUT",
                "/v1/conversations/{cid}/state",
                "Mute, archive or pin a conversation for yourself (all your devices)",
                self.update_state,
                ConversationPath,
                MemberStateBody,
                {200: MemberStateOut},
                MEMBERS_ONLY,
            ),
            Route(
                "GET",
                "/v1/conversations/{cid}/hidden",
                "The messages you hid in a conversation",
                self.hidden,
                ConversationPath,
                None,
                {200: HiddenOut},
                MEMBERS_ONLY,
            ),
            Route(
                "POST",
                "/v1/conversations/{cid}/hidden",
                "Hide (delete for me) or unhide messages, on all your devices",
                self.set_hidden,
                ConversationPath,
                HideBody,
                {200: HiddenOut},
                MEMBERS_ONLY,
            ),
        ]

    async def update_conversation(
        self, call: Call[ConversationPath, ConversationSettingsBody]
    ) -> web.Response:
        body = call.body
        conversation, members = await self._service.update_conversation(
            call.caller,
            call.params.cid,
            title=body.title,
            history=body.history,
            retention_days=body.retention_days,
        )
        return json_response(schemas.conversation_out(conversation, members))

    async def update_state(self, call: Call[ConversationPath, MemberStateBody]) -> web.Response:
        body = call.body
        settings = await self._service.update_member_settings(
            call.caller,
            call.params.cid,
            muted_until=body.muted_until,
            archived=body.archived,
            pinned=body.pinned,
        )
        frame = state_frame(call.params.cid, settings)
        return json_response(msgspec.convert(frame, MemberStateOut, from_attributes=True))

    async def hidden(self, call: Call[ConversationPath, None]) -> web.Response:
        seqs = await self._service.hidden(call.caller.user_id, call.params.cid)
        return json_response(HiddenOut(call.params.cid, seqs))

    async def set_hidden(self, call: Call[ConversationPath, HideBody]) -> web.Response:
        seqs = await self._service.set_hidden(
            call.caller, call.params.cid, call.body.seqs, call.body.hidden
        )
        return json_response(HiddenOut(call.params.cid, seqs))
