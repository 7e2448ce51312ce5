"""The content-kind registry: what a message's ``content.kind`` may be, who may
send it, how it is validated, and what text of it search will index.

Features add kinds (edit, reaction, media, ...) by registering a
:class:`ContentKind`; the core knows only the kinds it writes itself (the
membership events below). ``frames.check_content`` dispatches through a
:class:`ContentKinds` on every ``send``, so the registry keeps, per kind a
client may send, the one decision that path needs precomputed.

Every content is first read as a :class:`ContentHead` (its ``kind``, and its
``text``, which is a string wherever it appears): one parse of the common
``{"text": ...}`` content answers everything, and a kind with a schema of its
own is parsed a second time only when it is that kind.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, Literal, Protocol, TypeVar

import msgspec

from tidings.core.errors import ErrorCode, TidingsError
from tidings.core.models import Device, Member, Message
from tidings.settings import Settings

C = TypeVar("C", bound=msgspec.Struct)
Senders = Literal["clients", "server"]
"""``clients``: a client may send it (``send``, HTTP POST); ``server``: only the
server writes it, and a client sending it gets ``bad_frame``."""


class ContentHead(msgspec.Struct, frozen=True):
    """The part of every content the core reads; the rest is opaque and kept as sent.

    ``target`` is the seq a side entry (edit, delete, reaction) refers to;
    ``reply_to``, ``mentions`` and ``mention_all`` are what the store and the
    rules need of a text. Fields a content does not carry cost nothing to parse.
    """

    kind: str = "text"
    text: str | None = None
    target: int | None = None
    reply_to: int | None = None
    mentions: list[str] | None = None
    mention_all: bool = False


read_head: Callable[[bytes], ContentHead] = msgspec.json.Decoder(ContentHead).decode
"""The head of a content (``msgspec.DecodeError`` if it is none): one decoder
for the send path and every reader of the stream (views, rules, search text),
bound once, so the send path pays no call more than the decode."""


class RuleContext(Protocol):
    """What a kind's :data:`Rule` may ask about the send it judges (each answer
    is read from the store when asked, so a rule pays only for what it uses)."""

    @property
    def sender(self) -> Device: ...

    @property
    def conversation_id(self) -> str: ...

    @property
    def now(self) -> int: ...

    @property
    def settings(self) -> Settings: ...

    async def entry(self, seq: int) -> Message:
        """The entry at ``seq`` (``NOT_FOUND`` if the conversation has none)."""
        ...

    async def member(self) -> Member:
        """The sender as a member (``NOT_MEMBER`` if not one)."""
        ...

    async def is_group(self) -> bool: ...

    async def is_moderator(self) -> bool:
        """Whether the sender is one of the server's moderators."""
        ...


Rule = Callable[[ContentHead, RuleContext], Awaitable[None]]
"""Who may send a kind, and when: raises ``FORBIDDEN`` (or ``NOT_FOUND``, or
``BAD_FRAME``) to refuse. Runs before the append; what can change between the
two (a target deleted meanwhile) the store checks again in the append itself."""


Check = Callable[[Any], str | None]
"""A rule a msgspec type cannot say: the complaint about a decoded content, or None."""


@dataclass(frozen=True, slots=True)
class ContentKind(Generic[C]):
    """One kind of message content.

    ``schema`` validates the whole content (unknown fields are kept, not
    refused: clients may add their own); :class:`ContentHead` as the schema
    means the head parse is the whole validation. ``needs_text``: the content
    must carry a string ``text`` (checked on the head, at no extra cost).
    ``max_bytes`` lowers the node's ``max_content_bytes`` for this kind (a
    reaction needs far less than a text); ``indexable_text`` is what search
    indexes of it. ``rule`` decides who may send it (see :data:`Rule`);
    ``targets``: its ``target`` refers to an earlier entry (a side entry, folded
    into that entry by views); ``redacts``: it deletes its target for everyone.
    ``rule_applies`` limits the rule to the contents that need it (a text's
    rule runs only for replies and mentions), so the others pay nothing.
    """

    name: str
    schema: type[C]
    indexable_text: Callable[[C], str]
    sent_by: Senders = "clients"
    needs_text: bool = False
    max_bytes: int | None = None
    check: Check | None = None
    rule: Rule | None = None
    rule_applies: Callable[[ContentHead], bool] | None = None
    targets: bool = False
    redacts: bool = False

    def validator(self) -> Callable[[bytes], None] | None:
        """What validating this kind takes beyond the head (None: nothing)."""
        if self.schema is ContentHead and self.max_bytes is None and self.check is None:
            return None
        decoder = msgspec.json.Decoder(self.schema)

        def validate(content: bytes) -> None:
            if self.max_bytes is not None and len(content) > self.max_bytes:
                raise TidingsError(
                    ErrorCode.TOO_LARGE,
                    f"{self.name} content is {len(content)} bytes; the limit is {self.max_bytes}",
                )
            try:
                value = decoder.decode(content)
            except msgspec.DecodeError as exc:
                raise invalid(exc) from None
            problem = None if self.check is None else self.check(value)
            if problem is not None:
                raise TidingsError(ErrorCode.BAD_FRAME, problem)

        return validate


@dataclass(frozen=True, slots=True)
class ClientKind:
    """What ``check_content`` does for one kind a client may send, precomputed so
    that a ``text`` costs a dict lookup and two tests beyond its one parse; and
    what the send then needs of it (``stored_kind``: None for ``text``)."""

    needs_text: bool
    validate: Callable[[bytes], None] | None
    rule: Rule | None = None
    rule_applies: Callable[[ContentHead], bool] | None = None
    stored_kind: str | None = None
    targets: bool = False
    redacts: bool = False


class ContentKinds:
    """The kinds one node accepts and stores; registered once, when the node is built."""

    __slots__ = ("_kinds", "sendable")

    def __init__(self, kinds: Iterable[ContentKind[Any]] = ()) -> None:
        self._kinds: dict[str, ContentKind[Any]] = {}
        self.sendable: dict[str, ClientKind] = {}
        """Kind name -> how to validate it, for the kinds clients may send (the hot path)."""
        for kind in (*MEMBERSHIP_KINDS, *kinds):
            self.register(kind)

    def register(self, kind: ContentKind[Any]) -> None:
        """Add ``kind``; a name registered twice is a mistake of the node's composition."""
        if kind.name in self._kinds:
            raise ValueError(f"content kind {kind.name!r} is registered twice")
        self._kinds[kind.name] = kind
        if kind.sent_by == "clients":
            self.sendable[kind.name] = ClientKind(
                kind.needs_text,
                kind.validator(),
                kind.rule,
                kind.rule_applies,
                None if kind.name == "text" else kind.name,
                kind.targets,
                kind.redacts,
            )

    def __iter__(self) -> Iterator[ContentKind[Any]]:
        return iter(self._kinds.values())

    def indexable_text(self, content: bytes) -> str:
        """What search indexes of a stored content ("" for a kind this node does not know)."""
        head = read_head(content)
        kind = self._kinds.get(head.kind)
        if kind is None:
            return ""
        value = (
            head if kind.schema is ContentHead else msgspec.json.decode(content, type=kind.schema)
        )
        return kind.indexable_text(value)


def invalid(exc: msgspec.DecodeError) -> TidingsError:
    """The ``bad_frame`` for content that does not parse as its kind's schema."""
    if isinstance(exc, msgspec.ValidationError):
        return TidingsError(ErrorCode.BAD_FRAME, f"invalid content: {exc}")
    return TidingsError(ErrorCode.BAD_FRAME, "content is not valid JSON")


# -- the kinds the core writes itself ------------------------------------------


class MembershipEvent(msgspec.Struct, frozen=True):
    """``member_added`` / ``member_removed``: a membership change in the seq stream."""

    kind: Literal["member_added", "member_removed"]
    user_ids: list[str]
    by: str


def _no_text(_: MembershipEvent) -> str:
    return ""


MEMBERSHIP_KINDS: tuple[ContentKind[MembershipEvent], ...] = tuple(
    ContentKind(name, MembershipEvent, _no_text, sent_by="server")
    for name in ("member_added", "member_removed")
)
"""Written by ``ChatService.change_members`` only; part of every node."""
