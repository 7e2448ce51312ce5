"""The content kinds people expect of a chat beyond a plain text: ``edit``,
``delete`` (for everyone) and ``reaction``, and the rules of who may send
them. The ``text`` kind's own fields (``reply_to``, ``mentions``,
``mention_all``, ``forwarded``) are checked by :func:`text_rule`
(``features/text.py`` registers it).

Each side entry names its ``target`` seq; the store checks in the append
itself that the target exists, is no side entry and was not deleted, so a
rule here judges only what cannot change (who wrote the target, when).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

import msgspec

from tidings.core.content_kinds import ContentHead, ContentKind, RuleContext, read_head
from tidings.core.errors import ErrorCode, TidingsError
from tidings.core.models import Message, Role

Seq = Annotated[int, msgspec.Meta(ge=1)]
MAX_MENTIONS = 100
_ID = re.compile(r"[^\s*]{1,64}")
"""A mentioned user id: what ids look like, and never ``*`` (everyone is ``mention_all``)."""
"""Most user ids one text mentions (``mention_all`` reaches any group)."""


class EditContent(msgspec.Struct, frozen=True):
    kind: Literal["edit"]
    target: Seq
    text: str


class DeleteContent(msgspec.Struct, frozen=True):
    kind: Literal["delete"]
    target: Seq


class ReactionContent(msgspec.Struct, frozen=True):
    kind: Literal["reaction"]
    target: Seq
    emoji: Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
    on: bool


def _kind_of(entry: Message) -> str:
    return read_head(entry.content).kind


def _refuse(message: str) -> TidingsError:
    return TidingsError(ErrorCode.FORBIDDEN, message)


def text_needs_rule(head: ContentHead) -> bool:
    return head.reply_to is not None or head.mentions is not None or head.mention_all


async def text_rule(head: ContentHead, context: RuleContext) -> None:
    """A reply names an entry of the conversation; mentions are few and distinct;
    ``mention_all`` is for groups."""
    mentions = head.mentions
    if mentions is not None and (
        len(mentions) > MAX_MENTIONS
        or len(set(mentions)) != len(mentions)
        or not all(_ID.fullmatch(user_id) for user_id in mentions)
    ):
        raise TidingsError(
            ErrorCode.BAD_FRAME, f"mentions must be at most {MAX_MENTIONS} distinct user ids"
        )
    if head.mention_all and not await context.is_group():
        raise TidingsError(ErrorCode.BAD_FRAME, "mention_all is for groups")
    if head.reply_to is not None:
        if head.reply_to < 1:
            raise TidingsError(ErrorCode.BAD_FRAME, "reply_to must be a seq (1 or more)")
        await context.entry(head.reply_to)


async def _target(head: ContentHead, context: RuleContext) -> Message:
    """The primary entry a side entry refers to (``NOT_FOUND`` for another
    side entry, as the store would answer); a deleted one is ``FORBIDDEN``."""
    assert head.target is not None  # the kind's schema requires it
    entry = await context.entry(head.target)
    target = read_head(entry.content)
    if target.target is not None:
        raise TidingsError(ErrorCode.NOT_FOUND, f"no message {head.target} in this conversation")
    if target.kind == "deleted":
        raise _refuse(f"message {head.target} was deleted")
    return entry


async def reaction_rule(head: ContentHead, context: RuleContext) -> None:
    """A reaction names a message the sender can see (a later joiner cannot
    react to what was said before they joined)."""
    await _target(head, context)


async def edit_rule(head: ContentHead, context: RuleContext) -> None:
    """Only the author edits, only a text, only within ``edit_window_s``."""
    entry = await _target(head, context)
    if _kind_of(entry) != "text":
        raise _refuse("only a text can be edited")
    if entry.sender_id != context.sender.user_id:
        raise _refuse("only its author can edit a message")
    window_s = context.settings.edit_window_s
    if context.now - entry.ts > window_s * 1000:
        raise _refuse(f"a message can be edited for {window_s} s after it was sent")


async def delete_rule(head: ContentHead, context: RuleContext) -> None:
    """The author, a group admin or a moderator deletes; membership events stay."""
    entry = await _target(head, context)
    if _kind_of(entry) in ("member_added", "member_removed"):
        raise _refuse("membership events cannot be deleted")
    if entry.sender_id == context.sender.user_id:
        return
    if await context.is_group() and (await context.member()).role is Role.ADMIN:
        return
    if await context.is_moderator():
        return
    raise _refuse("only its author, a group admin or a moderator can delete a message")


def _edit_text(content: EditContent) -> str:
    return content.text


def _nothing(_: object) -> str:
    return ""


EDIT = ContentKind("edit", EditContent, _edit_text, rule=edit_rule, targets=True)
DELETE = ContentKind(
    "delete", DeleteContent, _nothing, rule=delete_rule, targets=True, redacts=True, max_bytes=256
)
REACTION = ContentKind(
    "reaction", ReactionContent, _nothing, rule=reaction_rule, targets=True, max_bytes=512
)
