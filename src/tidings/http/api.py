"""The HTTP API (PROTOCOL.md, "HTTP"): thin handlers over the chat service.

Every handler decodes its body with ``tidings.core.frames.decode_body`` and
lets :class:`TidingsError` propagate; :func:`guarded` turns errors into
``{"error": {"code", "message", "retryable"}}`` with the code's status, so
HTTP and WebSocket reject the same input with the same code.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable

import msgspec
from aiohttp import web

from tidings.core.auth import AuthService
from tidings.core.errors import ErrorCode, TidingsError
from tidings.core.frames import (
    ID_MAX_LENGTH,
    CreateConversationBody,
    LoginBody,
    MembersBody,
    PostMessageBody,
    RegisterBody,
    decode_body,
    parse_count,
)
from tidings.core.models import ConversationKind, Device
from tidings.core.service import ChatService
from tidings.http import schemas
from tidings.observability.metrics import Metrics
from tidings.store.base import Store

log = logging.getLogger("tidings.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_encoder = msgspec.json.Encoder()


def json_response(body: msgspec.Struct, status: int = 200) -> web.Response:
    return web.Response(body=_encoder.encode(body), status=status, content_type="application/json")


def error_response(error: TidingsError) -> web.Response:
    detail = schemas.ErrorDetail(
        code=error.code.value,
        message=error.message,
        retryable=error.retryable,
        retry_after_ms=error.retry_after_ms,
    )
    response = json_response(schemas.ErrorBody(detail), error.http_status)
    if error.retry_after_ms is not None:
        response.headers["Retry-After"] = str(max(1, -(-error.retry_after_ms // 1000)))
    return response


def guarded(metrics: Metrics, handler: Handler) -> Handler:
    """Wrap an HTTP handler so that every error becomes the protocol's JSON body.

    A wrapper per HTTP route rather than an aiohttp middleware: a middleware
    would also wrap the WebSocket handler, and its suspended frame for the
    whole life of every connection measured 0.5 KiB per idle connection.
    """

    @functools.wraps(handler)
    async def guard(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except TidingsError as exc:
            metrics.errors.labels(exc.code.value).inc()
            return error_response(exc)
        except web.HTTPRequestEntityTooLarge:
            return error_response(TidingsError(ErrorCode.TOO_LARGE, "request body too large"))
        except web.HTTPException:
            raise
        except Exception:
            log.exception("request failed", extra={"path": request.path})
            metrics.errors.labels(ErrorCode.INTERNAL.value).inc()
            return error_response(TidingsError(ErrorCode.INTERNAL, "internal error"))

    return guard


async def no_such_route(request: web.Request) -> web.StreamResponse:
    """The catch-all route: JSON ``not_found``, or ``bad_request`` for a known
    path asked with a method it does not take (aiohttp would answer text)."""
    for resource in request.app.router.resources():
        if resource.canonical == CATCH_ALL:
            continue
        match, allowed = await resource.resolve(request)
        if match is None and allowed:
            raise TidingsError(
                ErrorCode.BAD_REQUEST,
                f"method not allowed; use {', '.join(sorted(allowed))}",
            )
    raise TidingsError(ErrorCode.NOT_FOUND, "no such endpoint")


CATCH_ALL = "/{tail:.*}"


def _path_id(request: web.Request, name: str) -> str:
    """A path segment that names an id, held to the rules of a frame's ``Id``
    (1-64 characters, no NUL: PostgreSQL cannot look such text up)."""
    value = request.match_info[name]
    if not 0 < len(value) <= ID_MAX_LENGTH or "\x00" in value:
        raise TidingsError(ErrorCode.BAD_REQUEST, f"{name} is not a valid id")
    return value


def _int_param(request: web.Request, name: str, default: int | None) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    value = parse_count(raw)
    if value is None:
        raise TidingsError(ErrorCode.BAD_REQUEST, f"{name} must be a non-negative integer")
    return value


class HttpApi:
    def __init__(
        self,
        service: ChatService,
        auth: AuthService,
        store: Store,
        metrics: Metrics,
        max_body_bytes: int,
    ) -> None:
        self._metrics = metrics
        self._service = service
        self._auth = auth
        self._store = store
        self._max_body = max_body_bytes

    def routes(self) -> list[web.RouteDef]:
        """Every route, guarded; the catch-all must be added last."""
        return [
            web.route(route.method, route.path, guarded(self._metrics, route.handler))
            for route in self._routes()
        ]

    def _routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/auth/register", self.register),
            web.post("/v1/auth/login", self.login),
            web.post("/v1/auth/logout", self.logout),
            web.get("/v1/users", self.find_user),
            web.get("/v1/users/{user_id}", self.get_user),
            web.post("/v1/conversations", self.create_conversation),
            web.get("/v1/conversations", self.list_conversations),
            web.get("/v1/conversations/{cid}", self.get_conversation),
            web.post("/v1/conversations/{cid}/members", self.add_members),
            web.delete("/v1/conversations/{cid}/members/{user_id}", self.remove_member),
            web.get("/v1/conversations/{cid}/messages", self.history),
            web.post("/v1/conversations/{cid}/messages", self.post_message),
            web.get("/v1/conversations/{cid}/receipts", self.receipts),
        ]

    async def _body(self, request: web.Request) -> bytes:
        if request.content_length is not None and request.content_length > self._max_body:
            raise TidingsError(ErrorCode.TOO_LARGE, "request body too large")
        return await request.read()

    async def _device(self, request: web.Request) -> Device:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            raise TidingsError(ErrorCode.UNAUTHORIZED, "missing bearer token")
        return await self._auth.authenticate(token.strip())

    async def register(self, request: web.Request) -> web.Response:
        body = decode_body(await self._body(request), RegisterBody)
        user = await self._auth.register(body.username, body.password)
        return json_response(schemas.RegisterOut(user.user_id), 201)

    async def login(self, request: web.Request) -> web.Response:
        body = decode_body(await self._body(request), LoginBody)
        token, device = await self._auth.login(body.username, body.password, body.device_name)
        return json_response(schemas.LoginOut(token, device.user_id, device.device_id))

    async def logout(self, request: web.Request) -> web.Response:
        device = await self._device(request)
        await self._service.logout(device)
        return web.Response(status=204)

    async def get_user(self, request: web.Request) -> web.Response:
        await self._device(request)
        user = await self._store.get_user(_path_id(request, "user_id"))
        if user is None:
            raise TidingsError(ErrorCode.NOT_FOUND, "no such user")
        return json_response(schemas.user_out(user))

    async def find_user(self, request: web.Request) -> web.Response:
        await self._device(request)
        username = request.query.get("username")
        if not username:
            raise TidingsError(ErrorCode.BAD_REQUEST, "give ?username=")
        if "\x00" in username:
            raise TidingsError(ErrorCode.BAD_REQUEST, "username must not contain NUL")
        creds = await self._store.get_credentials(username)
        if creds is None:
            raise TidingsError(ErrorCode.NOT_FOUND, "no such user")
        return json_response(schemas.user_out(creds.user))

    async def create_conversation(self, request: web.Request) -> web.Response:
        device = await self._device(request)
        body = decode_body(await self._body(request), CreateConversationBody)
        conv, created = await self._service.create_conversation(
            device, ConversationKind(body.kind), body.members, body.title
        )
        members = await self._store.get_members(conv.conversation_id)
        return json_response(schemas.conversation_out(conv, members), 201 if created else 200)

    async def list_conversations(self, request: web.Request) -> web.Response:
        device = await self._device(request)
        states = await self._service.list_conversations(device)
        return json_response(schemas.ConversationListOut([schemas.summary_out(s) for s in states]))

    async def get_conversation(self, request: web.Request) -> web.Response:
        device = await self._device(request)
        cid = _path_id(request, "cid")
        members = await self._service.get_members(device.user_id, cid)
        conv = await self._store.get_conversation(cid)
        if conv is None:
            raise TidingsError(ErrorCode.NOT_FOUND, "no such conversation")
        return json_response(schemas.conversation_out(conv, members))

    async def add_members(self, request: web.Request) -> web.Response:
        device = await self._device(request)
        body = decode_body(await self._body(request), MembersBody)
        message = await self._service.change_members(
            device, _path_id(request, "cid"), body.user_ids, ()
        )
        return json_response(
            schemas.MembersChangedOut(schemas.message_out(message) if message else None)
        )

    async def remove_member(self, request: web.Request) -> web.Response:
        device = await self._device(request)
        message = await self._service.change_members(
            device, _path_id(request, "cid"), (), (_path_id(request, "user_id"),)
        )
        return json_response(
            schemas.MembersChangedOut(schemas.message_out(message) if message else None)
        )

    async def history(self, request: web.Request) -> web.Response:
        device = await self._device(request)
        after = _int_param(request, "after_seq", 0) or 0
        before = _int_param(request, "before_seq", None)
        limit = _int_param(request, "limit", 50) or 50
        messages = await self._service.history(
            device.user_id, _path_id(request, "cid"), after, before, limit
        )
        return json_response(schemas.MessageListOut([schemas.message_out(m) for m in messages]))

    async def post_message(self, request: web.Request) -> web.Response:
        device = await self._device(request)
        body = decode_body(await self._body(request), PostMessageBody)
        result = await self._service.send(
            device, _path_id(request, "cid"), body.client_msg_id, bytes(body.content)
        )
        if not result.duplicate:
            self._metrics.messages_persisted.inc()
        m = result.message
        ack = schemas.AckOut(
            conversation_id=m.conversation_id,
            client_msg_id=m.client_msg_id,
            seq=m.seq,
            message_id=m.message_id,
            ts=m.ts,
            duplicate=result.duplicate,
        )
        return json_response(ack, 200 if result.duplicate else 201)

    async def receipts(self, request: web.Request) -> web.Response:
        device = await self._device(request)
        members = await self._service.get_members(device.user_id, _path_id(request, "cid"))
        read_seq = _int_param(request, "read_seq", None)
        if read_seq is not None:  # who has read up to this message
            members = [m for m in members if m.read_seq >= read_seq]
        return json_response(schemas.MemberListOut([schemas.member_out(m) for m in members]))
