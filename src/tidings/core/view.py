"""The current view of a conversation: one entry per message a person sees.

The seq stream keeps edits, deletes and reactions as entries of their own
(``docs/protocol.md``, "Message kinds"); a reader who wants today's state of
a page folds them into their targets: the latest edit's text, deleted
entries as ``{"kind":"deleted"}``, reactions counted per emoji with the
reader's own marked. The SDK folds the live stream the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import msgspec

from tidings.core.content_kinds import read_head
from tidings.core.models import Message


class ReactionCount(msgspec.Struct, frozen=True):
    emoji: str
    count: int
    me: bool


class ViewEntry(msgspec.Struct, frozen=True):
    seq: int
    message_id: str
    sender_id: str
    client_msg_id: str
    ts: int
    content: msgspec.Raw
    edited: bool
    edited_ts: int | None
    deleted: bool
    reactions: list[ReactionCount]


class _Side(msgspec.Struct, frozen=True):
    kind: str
    target: int
    text: str | None = None
    emoji: str | None = None
    on: bool = True
    deleted: bool = False


_side = msgspec.json.Decoder(_Side)
_any = msgspec.json.Decoder(dict[str, object])
_encode = msgspec.json.encode
DELETED = msgspec.Raw(b'{"kind":"deleted"}')


class _State:
    __slots__ = ("deleted", "edit", "reactions")

    def __init__(self) -> None:
        self.edit: Message | None = None
        self.deleted = False
        self.reactions: dict[tuple[str, str], bool] = {}


def fold(entries: Sequence[Message], side: Iterable[Message], me: str) -> list[ViewEntry]:
    """``entries`` (no side entries, seq order) with ``side`` (the side entries
    that target them, seq order) folded in, as ``me`` sees them."""
    states = {entry.seq: _State() for entry in entries}
    for message in side:
        change = _side.decode(message.content)
        state = states.get(change.target)
        if state is None:
            continue
        if change.kind == "delete":
            state.deleted = True
        elif change.kind == "edit" and not change.deleted and change.text is not None:
            state.edit = message
        elif change.kind == "reaction" and change.emoji is not None:
            state.reactions[(message.sender_id, change.emoji)] = change.on
    return [_entry(entry, states[entry.seq], me) for entry in entries]


def _entry(entry: Message, state: _State, me: str) -> ViewEntry:
    deleted = state.deleted or read_head(entry.content).kind == "deleted"
    content = msgspec.Raw(entry.content)
    if deleted:
        content = DELETED
    elif state.edit is not None:
        current = _any.decode(entry.content)
        current["text"] = _side.decode(state.edit.content).text
        content = msgspec.Raw(_encode(current))
    reactions: dict[str, list[str]] = {}
    if not deleted:
        for (sender, emoji), on in state.reactions.items():
            if on:
                reactions.setdefault(emoji, []).append(sender)
    counts = sorted(
        (ReactionCount(emoji, len(senders), me in senders) for emoji, senders in reactions.items()),
        key=lambda r: (-r.count, r.emoji),
    )
    edit = None if deleted else state.edit
    return ViewEntry(
        entry.seq,
        entry.message_id,
        entry.sender_id,
        entry.client_msg_id,
        entry.ts,
        content,
        edit is not None,
        None if edit is None else edit.ts,
        deleted,
        counts,
    )
