"""The HTTP API (PROTOCOL.md, "HTTP"): thin handlers over the chat service.

Each route is declared once in :meth:`HttpApi.routes` (``tidings.http.routes``):
the server authenticates and decodes every request with the declared types
before a handler runs, and ``/openapi.json`` is generated from the same
declarations. Handlers let :class:`TidingsError` propagate; the guard turns
it into the protocol's JSON error body.
"""

from __future__ import annotations

import time

import msgspec
from aiohttp import web

from tidings.core.accounts import AccountService
from tidings.core.auth import AuthService
from tidings.core.errors import ErrorCode
from tidings.core.frames import (
    CreateConversationBody,
    LoginBody,
    MembersBody,
    PostMessageBody,
    RegisterBody,
)
from tidings.core.ids import now_ms
from tidings.core.models import ConversationKind
from tidings.core.service import ChatService, ack
from tidings.core.trace import SendStamps, Tracer
from tidings.http import schemas
from tidings.http.params import (
    HISTORY_LIMIT,
    ConversationPath,
    FindUserQuery,
    HistoryParams,
    MemberPath,
    ReceiptsParams,
    UserPath,
)
from tidings.http.respond import json_response
from tidings.http.routes import AnyRoute, Call, NoParams, Route

E = ErrorCode
# Every route below reads the store: it can be unavailable.
STORE = frozenset({E.UNAVAILABLE})
MEMBERS_ONLY = STORE | {E.NOT_MEMBER}


class HttpApi:
    def __init__(
        self, service: ChatService, auth: AuthService, accounts: AccountService, tracer: Tracer
    ) -> None:
        self._service = service
        self._auth = auth
        self._accounts = accounts
        self._tracer = tracer

    def routes(self) -> list[AnyRoute]:
        """Every /v1 route (the catch-all is the app's, added last)."""
        return [
            Route(
                "POST",
                "/v1/auth/register",
                "Register a user",
                self.register,
                NoParams,
                RegisterBody,
                {201: schemas.RegisterOut},
                STORE | {E.CONFLICT},
                auth=False,
            ),
            Route(
                "POST",
                "/v1/auth/login",
                "Log in: creates a device and returns its bearer token",
                self.login,
                NoParams,
                LoginBody,
                {200: schemas.LoginOut},
                STORE | {E.UNAUTHORIZED, E.FORBIDDEN},
                auth=False,
            ),
            Route(
                "POST",
                "/v1/auth/logout",
                "Revoke this device's token",
                self.logout,
                NoParams,
                None,
                {204: None},
                STORE,
            ),
            Route(
                "GET",
                "/v1/users",
                "Find a user by username",
                self.find_user,
                FindUserQuery,
                None,
                {200: schemas.UserOut},
                STORE | {E.NOT_FOUND},
            ),
            Route(
                "GET",
                "/v1/users/{user_id}",
                "A user's public profile",
                self.get_user,
                UserPath,
                None,
                {200: schemas.UserOut},
                STORE | {E.NOT_FOUND},
            ),
            Route(
                "POST",
                "/v1/conversations",
                "Create a direct conversation (200 if it exists) or a group",
                self.create_conversation,
                NoParams,
                CreateConversationBody,
                {201: schemas.ConversationOut, 200: schemas.ConversationOut},
                STORE | {E.NOT_FOUND},
            ),
            Route(
                "GET",
                "/v1/conversations",
                "The caller's conversations with cursors and unread counts",
                self.list_conversations,
                NoParams,
                None,
                {200: schemas.ConversationListOut},
                STORE,
            ),
            Route(
                "GET",
                "/v1/conversations/{cid}",
                "One conversation with its members",
                self.get_conversation,
                ConversationPath,
                None,
                {200: schemas.ConversationOut},
                MEMBERS_ONLY,
            ),
            Route(
                "POST",
                "/v1/conversations/{cid}/members",
                "Add members (group admins)",
                self.add_members,
                ConversationPath,
                MembersBody,
                {200: schemas.MembersChangedOut},
                MEMBERS_ONLY | {E.FORBIDDEN},
            ),
            Route(
                "DELETE",
                "/v1/conversations/{cid}/members/{user_id}",
                "Remove a member (group admins; anyone may remove themselves)",
                self.remove_member,
                MemberPath,
                None,
                {200: schemas.MembersChangedOut},
                MEMBERS_ONLY | {E.FORBIDDEN},
            ),
            Route(
                "GET",
                "/v1/conversations/{cid}/messages",
                "History by seq (members only); view=current folds edits, deletes and reactions",
                self.history,
                HistoryParams,
                None,
                {200: (schemas.MessageListOut, schemas.ViewListOut)},
                MEMBERS_ONLY,
            ),
            Route(
                "POST",
                "/v1/conversations/{cid}/messages",
                "Send a message (idempotent per client_msg_id: 200 for a repeat)",
                self.post_message,
                ConversationPath,
                PostMessageBody,
                {201: schemas.AckOut, 200: schemas.AckOut},
                MEMBERS_ONLY | {E.BAD_FRAME, E.RATE_LIMITED, E.FORBIDDEN},
            ),
            Route(
                "GET",
                "/v1/conversations/{cid}/receipts",
                "Every member's delivered/read cursors",
                self.receipts,
                ReceiptsParams,
                None,
                {200: schemas.MemberListOut},
                MEMBERS_ONLY,
            ),
        ]

    async def register(self, call: Call[NoParams, RegisterBody]) -> web.Response:
        user = await self._auth.register(call.body.username, call.body.password)
        return json_response(schemas.RegisterOut(user.user_id), 201)

    async def login(self, call: Call[NoParams, LoginBody]) -> web.Response:
        body = call.body
        token, device = await self._auth.login(body.username, body.password, body.device_name)
        return json_response(schemas.LoginOut(token, device.user_id, device.device_id))

    async def logout(self, call: Call[NoParams, None]) -> web.Response:
        await self._service.logout(call.caller)
        return web.Response(status=204)

    async def get_user(self, call: Call[UserPath, None]) -> web.Response:
        user = await self._accounts.get_user(call.params.user_id)
        return json_response(schemas.user_out(user))

    async def find_user(self, call: Call[FindUserQuery, None]) -> web.Response:
        user = await self._accounts.find_user(call.params.username)
        return json_response(schemas.user_out(user))

    async def create_conversation(
        self, call: Call[NoParams, CreateConversationBody]
    ) -> web.Response:
        body = call.body
        conv, created = await self._service.create_conversation(
            call.caller, ConversationKind(body.kind), body.members, body.title
        )
        members = await self._service.get_members(call.caller.user_id, conv.conversation_id)
        return json_response(schemas.conversation_out(conv, members), 201 if created else 200)

    async def list_conversations(self, call: Call[NoParams, None]) -> web.Response:
        states = await self._service.list_conversations(call.caller)
        now = now_ms()
        return json_response(
            schemas.ConversationListOut([schemas.summary_out(s, now) for s in states])
        )

    async def get_conversation(self, call: Call[ConversationPath, None]) -> web.Response:
        conv, members = await self._service.get_conversation(call.caller.user_id, call.params.cid)
        return json_response(schemas.conversation_out(conv, members))

    async def add_members(self, call: Call[ConversationPath, MembersBody]) -> web.Response:
        message = await self._service.change_members(
            call.caller, call.params.cid, call.body.user_ids, ()
        )
        return json_response(
            schemas.MembersChangedOut(schemas.message_out(message) if message else None)
        )

    async def remove_member(self, call: Call[MemberPath, None]) -> web.Response:
        params = call.params
        message = await self._service.change_members(call.caller, params.cid, (), (params.user_id,))
        return json_response(
            schemas.MembersChangedOut(schemas.message_out(message) if message else None)
        )

    async def history(self, call: Call[HistoryParams, None]) -> web.Response:
        q = call.params
        if q.view == "current":
            entries = await self._service.current_view(
                call.caller.user_id, q.cid, q.after_seq, q.before_seq, q.limit or HISTORY_LIMIT
            )
            return json_response(schemas.ViewListOut(entries))
        messages = await self._service.history(
            call.caller.user_id, q.cid, q.after_seq, q.before_seq, q.limit or HISTORY_LIMIT
        )
        return json_response(schemas.MessageListOut([schemas.message_out(m) for m in messages]))

    async def post_message(self, call: Call[ConversationPath, PostMessageBody]) -> web.Response:
        body = call.body
        stamps = SendStamps(time.time()) if self._tracer.on else None
        result = await self._service.send(
            call.caller, call.params.cid, body.client_msg_id, bytes(body.content), stamps=stamps
        )
        # The ack's fields without the frame's envelope (``type``, ``id``).
        answer = msgspec.convert(ack(result), schemas.AckOut, from_attributes=True)
        response = json_response(answer, 200 if result.duplicate else 201)
        if stamps is not None and not result.duplicate:
            # "acked": the answer is built; HTTP clients say no network.
            self._tracer.sent(result.message, call.caller, "unknown", stamps)
        return response

    async def receipts(self, call: Call[ReceiptsParams, None]) -> web.Response:
        q = call.params
        members = await self._service.get_members(call.caller.user_id, q.cid)
        if q.read_seq is not None:  # who has read up to this message
            members = [m for m in members if m.read_seq >= q.read_seq]
        return json_response(schemas.MemberListOut([schemas.member_out(m) for m in members]))
