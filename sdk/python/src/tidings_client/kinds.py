"""Message kinds: building the content of a send, and reading a message's content.

Every kind travels in a conversation's seq stream as a ``msg`` whose
``content`` is a JSON object with ``kind`` (absent means ``text``). Side
entries (``edit``, ``delete``, ``reaction``) change how an earlier message
looks; :class:`~tidings_client.view.ConversationView` folds them in.

The builders (:func:`text_content`, :func:`edit_content`, ...) check here what
the server would refuse with ``bad_frame``, so a mistake fails at the call
instead of sitting in the outbox until the server rejects it. They return
plain :data:`~tidings_client.frames.Content` because that is what the outbox
stores and the ``send`` frame carries.

:func:`parse_content` turns a received content into one typed struct per
kind, or ``None`` for a kind this SDK does not know (a newer server): the app
then shows the :class:`~tidings_client.frames.Message` as unsupported, with
its raw content, and keeps going.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import msgspec

from tidings_client.frames import Content, frame_types

# The server's bounds (the wire contract of these kinds).
MAX_MENTIONS = 100
MAX_EMOJI_CHARS = 32

# Kinds that change another message instead of being one a person sees.
SIDE_KINDS = frozenset({"edit", "delete", "reaction"})


class TextContent(msgspec.Struct, frozen=True, omit_defaults=True, tag="text", tag_field="kind"):
    """A text message; ``reply_to`` is the seq it answers, ``mentions`` user ids."""

    text: str
    reply_to: int | None = None
    mentions: tuple[str, ...] = ()
    mention_all: bool = False
    forwarded: bool = False


class EditContent(msgspec.Struct, frozen=True, omit_defaults=True, tag="edit", tag_field="kind"):
    """New text for the message at ``target``.

    ``deleted`` marks the tombstone the server leaves of an edit once its
    target was deleted (then ``text`` is ``None``).
    """

    target: int
    text: str | None = None
    deleted: bool = False


class DeleteContent(
    msgspec.Struct, frozen=True, omit_defaults=True, tag="delete", tag_field="kind"
):
    """The message at ``target`` is deleted for everyone."""

    target: int


class ReactionContent(
    msgspec.Struct, frozen=True, omit_defaults=True, tag="reaction", tag_field="kind"
):
    """The sender's ``emoji`` on ``target`` is switched on or off."""

    target: int
    emoji: str
    on: bool


class DeletedContent(msgspec.Struct, frozen=True, tag="deleted", tag_field="kind"):
    """What the server keeps of a message deleted for everyone."""


class MembershipContent(msgspec.Struct, frozen=True, tag_field="kind"):
    """Members were added or removed (written by the server; ``by`` is the actor)."""

    user_ids: tuple[str, ...]
    by: str


class MemberAdded(MembershipContent, frozen=True, tag="member_added"):
    """Members were added."""


class MemberRemoved(MembershipContent, frozen=True, tag="member_removed"):
    """Members were removed or left."""


KnownContent = (
    TextContent
    | EditContent
    | DeleteContent
    | ReactionContent
    | DeletedContent
    | MemberAdded
    | MemberRemoved
)

_encoder = msgspec.json.Encoder()
_content_decoder: msgspec.json.Decoder[Content] = msgspec.json.Decoder(Content)

_KNOWN_KINDS = frame_types(KnownContent)


def parse_content(content: Mapping[str, object]) -> KnownContent | None:
    """The typed form of a message's content; ``None`` for an unknown kind or
    a known kind with fields this SDK cannot read (show it as unsupported)."""
    kind = content.get("kind", "text")
    if kind not in _KNOWN_KINDS:
        return None
    try:
        parsed: KnownContent = msgspec.convert({**content, "kind": kind}, type=KnownContent)
    except msgspec.ValidationError:
        return None
    return parsed


def text_content(
    text: str,
    *,
    reply_to: int | None = None,
    mentions: Iterable[str] = (),
    mention_all: bool = False,
    forwarded: bool = False,
) -> Content:
    """The content of a text message; options left at their default are not sent.

    ``mention_all`` is for groups only (the server answers ``forbidden`` in a
    direct conversation, which this function cannot know).
    """
    mentioned = tuple(mentions)
    if reply_to is not None:
        _check_target(reply_to, "reply_to")
    if len(mentioned) > MAX_MENTIONS:
        raise ValueError(f"at most {MAX_MENTIONS} mentions, got {len(mentioned)}")
    if len(set(mentioned)) != len(mentioned):
        raise ValueError("mentions must be unique")
    body = TextContent(text, reply_to, mentioned, mention_all, forwarded)
    return _plain(body, with_kind=False)


def edit_content(target: int, text: str) -> Content:
    """The content that replaces the text of our own message at ``target``."""
    return _plain(EditContent(_check_target(target, "target"), text))


def delete_content(target: int) -> Content:
    """The content that deletes the message at ``target`` for everyone."""
    return _plain(DeleteContent(_check_target(target, "target")))


def reaction_content(target: int, emoji: str, on: bool = True) -> Content:
    """The content that switches our ``emoji`` on the message at ``target`` on or off."""
    if not 1 <= len(emoji) <= MAX_EMOJI_CHARS:
        raise ValueError(f"emoji must be 1-{MAX_EMOJI_CHARS} characters, got {len(emoji)}")
    return _plain(ReactionContent(_check_target(target, "target"), emoji, on))


def message_content(
    content: Content | str,
    *,
    reply_to: int | None = None,
    mentions: Iterable[str] = (),
    mention_all: bool = False,
    forwarded: bool = False,
) -> Content:
    """What a ``send(conversation_id, content, ...)`` call sends.

    A str is a text message with the given options; a ready content is sent
    as is, and combining it with options is refused (they would be lost).
    """
    if isinstance(content, str):
        return text_content(
            content,
            reply_to=reply_to,
            mentions=mentions,
            mention_all=mention_all,
            forwarded=forwarded,
        )
    if reply_to is not None or tuple(mentions) or mention_all or forwarded:
        raise ValueError("text options need the text as a str, not a ready content")
    return content


def _check_target(seq: int, name: str) -> int:
    if seq < 1:
        raise ValueError(f"{name} must be a seq >= 1, got {seq}")
    return seq


def _plain(body: KnownContent, *, with_kind: bool = True) -> Content:
    """A content struct as the JSON object the wire carries (a JSON round
    trip, so that it equals what the outbox and the server give back).

    A text message goes without ``kind`` (absent means text), which is also
    what the SDK sent before kinds existed, so older servers accept it.
    """
    plain = _content_decoder.decode(_encoder.encode(body))
    if not with_kind:
        del plain["kind"]
    return plain
