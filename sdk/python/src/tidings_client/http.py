"""The HTTP half of the SDK: :class:`TidingsHTTP`.

Accounts, conversations, membership, history (raw or folded into the
``view=current``), hiding messages, each user's state of a conversation and
search are request/response calls, so they live on the REST API (``/v1``) rather than on
the WebSocket. Answers are decoded into the same structs the WebSocket uses
where the data is the same (:class:`Ack` for a posted message,
:class:`Message` for history, :class:`ConversationState`), so an application
handles one vocabulary whichever transport brought it.

Every non-2xx answer raises :class:`TidingsClientError` with the server's
``{"error": {"code", "message", "retryable"}}`` and the HTTP ``status``;
``Retry-After`` becomes ``retry_after_ms`` when the body does not carry one.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Literal, TypeVar
from urllib.parse import quote

import aiohttp
import msgspec

from tidings_client.errors import (
    BAD_RESPONSE,
    ConnectionClosedError,
    RequestTimeoutError,
    TidingsClientError,
)
from tidings_client.frames import Ack, Content, ConversationState, Message
from tidings_client.push import (
    PushSettings,
    PushSubscribed,
    PushSubscription,
    PushSubscriptions,
    VapidKey,
)
from tidings_client.view import ViewEntry

# One HTTP call: a store round trip or two; past this the server is in trouble.
DEFAULT_HTTP_TIMEOUT_S = 10.0
# The server's default page size for history, restated so callers can reason about paging.
DEFAULT_HISTORY_LIMIT = 50

# Codes used when an error answer has no parsable JSON error body.
_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    409: "conflict",
    413: "too_large",
    429: "rate_limited",
    503: "unavailable",
}


HistoryVisibility = Literal["joined", "full"]

# -- answers --------------------------------------------------------------------


class HiddenSet(msgspec.Struct, frozen=True):
    """Every seq this user has hidden in a conversation, ascending."""

    conversation_id: str
    seqs: list[int]


class LoginResult(msgspec.Struct, frozen=True):
    """A new device session: use ``token`` for HTTP and for the WebSocket hello."""

    token: str
    user_id: str
    device_id: str


class User(msgspec.Struct, frozen=True):
    """A user's public profile."""

    user_id: str
    username: str
    created_at: int = 0


class Member(msgspec.Struct, frozen=True):
    """A member of a conversation with their cursors (over all their devices)."""

    user_id: str
    role: str = "member"
    delivered_seq: int = 0
    read_seq: int = 0


class Conversation(msgspec.Struct, frozen=True):
    """A conversation with its members (the answer to create / get)."""

    conversation_id: str
    kind: str
    members: list[Member]
    title: str | None = None
    created_by: str | None = None
    created_at: int = 0
    last_seq: int = 0
    history: HistoryVisibility | None = None
    """Groups: what members who join later can read; ``None`` from an older server."""
    retention_days: int | None = None
    """Messages older than this are purged; ``None``: kept for ever (or not said)."""


class ConversationSummary(msgspec.Struct, frozen=True):
    """One entry of the caller's conversation list, with the caller's cursors."""

    conversation_id: str
    kind: str
    last_seq: int
    delivered_seq: int
    read_seq: int
    unread: int
    title: str | None = None
    mentions: int = 0
    """Messages after ``read_seq`` by others that mention the user or everyone."""
    muted: bool = False
    muted_until: int | None = None
    archived: bool = False
    pinned: bool = False
    history_start: int = 1
    """The first seq the user can still read (retention, or a later join)."""


class SearchResult(msgspec.Struct, frozen=True):
    """One message found: where it is, who sent it, and a snippet.

    ``snippet`` is HTML-escaped text with the words found in ``<mark>``: safe
    to put into HTML as it is. An edited message is found by its edited text
    at its own ``seq``."""

    conversation_id: str
    seq: int
    sender_id: str
    ts: int
    snippet: str


class SearchPage(msgspec.Struct, frozen=True):
    """One page of a search; pass ``next_cursor`` back for the next (None: the last).

    ``degraded``: the server answered from its slower path (its index is being
    rebuilt, or the dates asked are older than the index keeps): words match
    as typed, without stemming, accent or CJK folding, and edits are not seen."""

    results: list[SearchResult]
    next_cursor: str | None
    degraded: bool = False


# -- wire bodies (untagged mirrors of the WebSocket structs) ----------------------


class _ErrorDetail(msgspec.Struct, frozen=True):
    code: str
    message: str = ""
    retryable: bool | None = None
    retry_after_ms: int | None = None


class _ErrorBody(msgspec.Struct, frozen=True):
    error: _ErrorDetail


class _RegisterOut(msgspec.Struct, frozen=True):
    user_id: str


class _ConversationListOut(msgspec.Struct, frozen=True):
    conversations: list[ConversationSummary]


class _MessageOut(msgspec.Struct, frozen=True):
    conversation_id: str
    seq: int
    message_id: str
    sender_id: str
    client_msg_id: str
    ts: int
    content: Content

    def to_message(self) -> Message:
        return Message(
            self.conversation_id,
            self.seq,
            self.message_id,
            self.sender_id,
            self.client_msg_id,
            self.ts,
            self.content,
        )


class _MessageListOut(msgspec.Struct, frozen=True):
    messages: list[_MessageOut]


class _ViewOut(msgspec.Struct, frozen=True):
    messages: list[ViewEntry]


class _MembersChangedOut(msgspec.Struct, frozen=True):
    message: _MessageOut | None = None


class _MemberListOut(msgspec.Struct, frozen=True):
    members: list[Member]


class _AckOut(msgspec.Struct, frozen=True):
    conversation_id: str
    client_msg_id: str
    seq: int
    message_id: str
    ts: int
    duplicate: bool


class _Unset(enum.Enum):
    """The default of an optional argument that is sent only when given, where
    ``None`` is a value of its own (``muted_until=None`` unmutes)."""

    UNSET = enum.auto()


UNSET = _Unset.UNSET

T = TypeVar("T")

_encoder = msgspec.json.Encoder()


class TidingsHTTP:
    """An HTTP client for one user (or none, for register/login).

    :meth:`login` stores the token it gets, so that the calls after it are
    authenticated. Pass ``session`` to share an aiohttp session (it is then
    not closed by :meth:`close`).
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        session: aiohttp.ClientSession | None = None,
        timeout: float = DEFAULT_HTTP_TIMEOUT_S,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self._session = session
        self._owns_session = session is None
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    async def close(self) -> None:
        if self._owns_session and self._session is not None and not self._session.closed:
            await self._session.close()

    async def __aenter__(self) -> TidingsHTTP:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- accounts ---------------------------------------------------------------------

    async def register(self, username: str, password: str) -> str:
        """Create an account; returns its user_id (``conflict`` if the name is taken)."""
        body = {"username": username, "password": password}
        out = await self._call("POST", "/v1/auth/register", _RegisterOut, body, auth=False)
        return out.user_id

    async def login(
        self, username: str, password: str, device_name: str | None = None
    ) -> LoginResult:
        """Log in as a new device; the token is kept for the following calls."""
        body: dict[str, object] = {"username": username, "password": password}
        if device_name is not None:
            body["device_name"] = device_name
        result = await self._call("POST", "/v1/auth/login", LoginResult, body, auth=False)
        self.token = result.token
        return result

    async def get_user(self, user_id: str) -> User:
        return await self._call("GET", f"/v1/users/{_seg(user_id)}", User)

    async def find_user(self, username: str) -> User:
        """Look a user up by username (``not_found`` when there is none)."""
        return await self._call("GET", "/v1/users", User, params={"username": username})

    # -- conversations ------------------------------------------------------------------

    async def create_direct(self, other_id: str) -> Conversation:
        """The direct conversation with ``other_id``; the existing one if there is one."""
        body = {"kind": "direct", "members": [other_id]}
        return await self._call("POST", "/v1/conversations", Conversation, body)

    async def create_group(self, title: str, member_ids: list[str]) -> Conversation:
        """A new group; the caller is a member and its admin."""
        body = {"kind": "group", "title": title, "members": list(member_ids)}
        return await self._call("POST", "/v1/conversations", Conversation, body)

    async def get_conversation(self, conversation_id: str) -> Conversation:
        return await self._call("GET", f"/v1/conversations/{_seg(conversation_id)}", Conversation)

    async def list_conversations(self) -> list[ConversationSummary]:
        """The caller's conversations with their cursors and unread counts."""
        out = await self._call("GET", "/v1/conversations", _ConversationListOut)
        return out.conversations

    async def add_members(self, conversation_id: str, user_ids: list[str]) -> Message | None:
        """Add members (group admins only); returns the ``member_added`` message, if any."""
        path = f"/v1/conversations/{_seg(conversation_id)}/members"
        out = await self._call("POST", path, _MembersChangedOut, {"user_ids": list(user_ids)})
        return out.message.to_message() if out.message is not None else None

    async def remove_member(self, conversation_id: str, user_id: str) -> Message | None:
        """Remove a member (group admins only); returns the ``member_removed`` message."""
        path = f"/v1/conversations/{_seg(conversation_id)}/members/{_seg(user_id)}"
        out = await self._call("DELETE", path, _MembersChangedOut)
        return out.message.to_message() if out.message is not None else None

    async def receipts(self, conversation_id: str) -> list[Member]:
        """Every member's delivered/read cursors (the full list behind receipt_summary)."""
        path = f"/v1/conversations/{_seg(conversation_id)}/receipts"
        out = await self._call("GET", path, _MemberListOut)
        return out.members

    # -- messages -------------------------------------------------------------------------

    async def history(
        self,
        conversation_id: str,
        *,
        after_seq: int | None = None,
        before_seq: int | None = None,
        limit: int | None = None,
    ) -> list[Message]:
        """Every entry of the seq stream in seq order (members only), edits,
        deletes and reactions included; page with ``after_seq`` / ``before_seq``."""
        params = _page(after_seq, before_seq, limit)
        path = f"/v1/conversations/{_seg(conversation_id)}/messages"
        out = await self._call("GET", path, _MessageListOut, params=params)
        return [m.to_message() for m in out.messages]

    async def view(
        self,
        conversation_id: str,
        *,
        after_seq: int | None = None,
        before_seq: int | None = None,
        limit: int | None = None,
    ) -> list[ViewEntry]:
        """The messages a person sees, with edits, deletes and reactions folded
        in and those the user hid left out (``view=current``); paged like
        :meth:`history`. :class:`~tidings_client.view.ConversationView` computes
        the same from held messages."""
        params = {"view": "current", **_page(after_seq, before_seq, limit)}
        path = f"/v1/conversations/{_seg(conversation_id)}/messages"
        out = await self._call("GET", path, _ViewOut, params=params)
        return out.messages

    async def hide(
        self, conversation_id: str, seqs: Iterable[int], hidden: bool = True
    ) -> HiddenSet:
        """Hide these messages for this user only ("delete for me"), or show
        them again with ``hidden=False``; every device of the user gets a
        :class:`~tidings_client.frames.Hidden` event. Returns everything hidden now."""
        path = f"/v1/conversations/{_seg(conversation_id)}/hidden"
        body = {"seqs": list(seqs), "hidden": hidden}
        return await self._call("POST", path, HiddenSet, body)

    async def hidden(self, conversation_id: str) -> HiddenSet:
        """The seqs this user has hidden in the conversation."""
        path = f"/v1/conversations/{_seg(conversation_id)}/hidden"
        return await self._call("GET", path, HiddenSet)

    async def set_state(
        self,
        conversation_id: str,
        *,
        muted_until: int | _Unset | None = UNSET,
        archived: bool | _Unset = UNSET,
        pinned: bool | _Unset = UNSET,
    ) -> ConversationState:
        """Change this user's own state of a conversation; only the fields
        given are sent (the others keep their value on the server).

        ``muted_until`` is ms since the epoch, ``-1`` for ever, ``None`` or 0
        to unmute. Every device of the user gets a
        :class:`~tidings_client.frames.ConversationState` event.
        """
        body = _given(muted_until=muted_until, archived=archived, pinned=pinned)
        path = f"/v1/conversations/{_seg(conversation_id)}/state"
        return await self._call("PUT", path, ConversationState, body)

    async def update_conversation(
        self,
        conversation_id: str,
        *,
        title: str | _Unset = UNSET,
        history: HistoryVisibility | _Unset = UNSET,
        retention_days: int | _Unset | None = UNSET,
    ) -> Conversation:
        """Change a group's settings (group admins only, else ``forbidden``);
        only the fields given are sent. ``retention_days=None`` keeps messages
        for ever."""
        body = _given(title=title, history=history, retention_days=retention_days)
        path = f"/v1/conversations/{_seg(conversation_id)}"
        return await self._call("PATCH", path, Conversation, body)

    async def post_message(
        self, conversation_id: str, client_msg_id: str, content: Content | str
    ) -> Ack:
        """Post a message; a retry with the same client_msg_id answers ``duplicate=True``."""
        body: dict[str, object] = {
            "client_msg_id": client_msg_id,
            "content": {"text": content} if isinstance(content, str) else content,
        }
        path = f"/v1/conversations/{_seg(conversation_id)}/messages"
        out = await self._call("POST", path, _AckOut, body)
        return Ack(
            client_msg_id=out.client_msg_id,
            conversation_id=out.conversation_id,
            seq=out.seq,
            message_id=out.message_id,
            ts=out.ts,
            duplicate=out.duplicate,
        )

    async def search(
        self,
        q: str,
        *,
        conversation_id: str | None = None,
        sender_id: str | None = None,
        after: int | str | None = None,
        before: int | str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> SearchPage:
        """Messages this user can read that match ``q``: words, ``"phrases"``,
        ``-excluded``, and ``from:``, ``in:``, ``before:``, ``after:`` filters
        (docs/protocol.md, "Search"). ``after`` (inclusive) and ``before`` are
        ms since the epoch or ISO 8601 dates. Best first; page with ``cursor``.
        A malformed query raises ``bad_request``; a conversation the user is
        not in, ``not_member``."""
        given = {
            "q": q,
            "conversation_id": conversation_id,
            "sender_id": sender_id,
            "after": after,
            "before": before,
            "limit": limit,
            "cursor": cursor,
        }
        params = {name: str(value) for name, value in given.items() if value is not None}
        return await self._call("GET", "/v1/search", SearchPage, params=params)

    # -- machinery ---------------------------------------------------------------------------

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    # -- push notifications ---------------------------------------------------------

    async def vapid_public_key(self) -> str:
        """The ``applicationServerKey`` a browser subscribes to Web Push with."""
        return (await self._call("GET", "/v1/push/vapid", VapidKey)).public_key

    async def subscribe_webpush(self, subscription: Mapping[str, object]) -> PushSubscribed:
        """Subscribe this device with a browser's ``PushSubscription.toJSON()``
        (``endpoint`` and ``keys``)."""
        body = {"kind": "webpush", **subscription}
        return await self._call("POST", "/v1/push/subscriptions", PushSubscribed, body)

    async def subscribe_webhook(self, url: str) -> PushSubscribed:
        """Subscribe this device with a webhook; keep the answer's ``secret`` to
        check signatures (:func:`tidings_client.push.verify_webhook`)."""
        body = {"kind": "webhook", "url": url}
        return await self._call("POST", "/v1/push/subscriptions", PushSubscribed, body)

    async def push_subscriptions(self) -> list[PushSubscription]:
        """The user's subscriptions, on all their devices."""
        answer = await self._call("GET", "/v1/push/subscriptions", PushSubscriptions)
        return answer.subscriptions

    async def unsubscribe_push(self, subscription_id: str) -> None:
        path = f"/v1/push/subscriptions/{_seg(subscription_id)}"
        await self._call("DELETE", path, type(None))

    async def set_push_previews(self, previews: bool) -> bool:
        """Whether this user's notifications show a preview of the message."""
        body = {"previews": previews}
        return (await self._call("PUT", "/v1/push/settings", PushSettings, body)).previews

    async def _call(
        self,
        method: str,
        path: str,
        answer: type[T],
        body: object = None,
        *,
        params: dict[str, str] | None = None,
        auth: bool = True,
    ) -> T:
        headers = {"Accept": "application/json"}
        if auth:
            if self.token is None:
                raise TidingsClientError("unauthorized", "log in first (no token)")
            headers["Authorization"] = f"Bearer {self.token}"
        data: bytes | None = None
        if body is not None:
            data = _encoder.encode(body)
            headers["Content-Type"] = "application/json"
        url = self.base_url + path
        try:
            async with self._http().request(
                method, url, data=data, params=params, headers=headers, timeout=self._timeout
            ) as response:
                raw = await response.read()
                if response.status >= 400:
                    raise _error_from_response(response.status, raw, response.headers)
        except TimeoutError:
            raise RequestTimeoutError(f"{method} {path}: no answer in time") from None
        except aiohttp.ClientError as exc:
            raise ConnectionClosedError(f"{method} {path}: {exc}") from exc
        if not raw and answer is type(None):
            return None  # a 204: T is None
        try:
            return msgspec.json.decode(raw, type=answer)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise TidingsClientError(
                BAD_RESPONSE, f"{method} {path}: unexpected answer: {exc}", status=response.status
            ) from None


def _page(after_seq: int | None, before_seq: int | None, limit: int | None) -> dict[str, str]:
    """The query parameters of one page of messages."""
    params: dict[str, str] = {}
    for name, value in (("after_seq", after_seq), ("before_seq", before_seq), ("limit", limit)):
        if value is not None:
            params[name] = str(value)
    return params


def _given(**fields: object) -> dict[str, object]:
    """The fields the caller gave (not :data:`UNSET`); at least one."""
    body = {name: value for name, value in fields.items() if value is not UNSET}
    if not body:
        raise ValueError(f"give at least one of {', '.join(fields)}")
    return body


def _seg(value: str) -> str:
    """One URL path segment: ids are opaque, so quote everything."""
    return quote(value, safe="")


def _error_from_response(status: int, raw: bytes, headers: Mapping[str, str]) -> TidingsClientError:
    retry_after_ms: int | None = None
    retry_after = headers.get("Retry-After")
    if retry_after is not None and retry_after.strip().isdigit():
        retry_after_ms = int(retry_after.strip()) * 1000
    try:
        detail = msgspec.json.decode(raw, type=_ErrorBody).error
    except (msgspec.DecodeError, msgspec.ValidationError):
        code = _STATUS_CODES.get(status, "internal" if status >= 500 else "bad_request")
        text = raw[:200].decode(errors="replace")
        return TidingsClientError(
            code, f"HTTP {status}: {text}", retry_after_ms=retry_after_ms, status=status
        )
    return TidingsClientError(
        detail.code,
        detail.message,
        retryable=detail.retryable,
        retry_after_ms=detail.retry_after_ms
        if detail.retry_after_ms is not None
        else retry_after_ms,
        status=status,
    )
