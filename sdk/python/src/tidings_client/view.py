"""What a person sees of a conversation: side entries folded into the messages.

The seq stream holds every change as an entry of its own: an edit, a delete
and a reaction each have a seq, after the message they change. A screen
shows one bubble per message with its current text, an "edited" mark and
reaction counts. :class:`ConversationView` folds the stream into that list,
:class:`ViewEntry` items identical to what the server answers for
``GET .../messages?view=current`` (:meth:`~tidings_client.http.TidingsHTTP.view`),
so an app can render from its own store offline and from the server alike.

The fold depends only on the set of entries held, never on the order they
arrived in: a device that syncs from a later cursor can get an edit or a
reaction before its target, and two devices of one user can toggle the same
emoji in either order. So every rule picks by seq:

- text: the highest-seq edit that is not a tombstone gives the text (and
  ``edited_ts``); the original's other fields (``reply_to``...) stay;
- delete: a ``delete`` entry, a stored ``{"kind": "deleted"}`` target or a
  tombstoned edit (the server leaves those only for a deleted target) makes
  the content ``{"kind": "deleted"}``, unedited, without reactions, whatever
  else is held;
- reactions: per (sender, emoji), the highest-seq reaction entry's ``on``
  decides; counts by count descending, then emoji;
- membership events and kinds this SDK does not know are entries like text.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import msgspec

from tidings_client.frames import Content, Message
from tidings_client.kinds import (
    SIDE_KINDS,
    DeleteContent,
    DeletedContent,
    EditContent,
    ReactionContent,
    parse_content,
)

DELETED: Content = {"kind": "deleted"}


class ReactionCount(msgspec.Struct, frozen=True):
    """How many people have ``emoji`` on a message; ``me``: this user is one of them."""

    emoji: str
    count: int
    me: bool = False


class ViewEntry(msgspec.Struct, frozen=True):
    """One message as a person sees it now (an item of ``view=current``)."""

    seq: int
    message_id: str
    sender_id: str
    client_msg_id: str
    ts: int
    content: Content
    edited: bool = False
    edited_ts: int | None = None
    deleted: bool = False
    reactions: tuple[ReactionCount, ...] = ()


@dataclass
class _Changes:
    """Everything held that changes one target seq."""

    deleted: bool = False
    # seq -> (ts, text) of every edit that is not a tombstone.
    edits: dict[int, tuple[int, str]] = field(default_factory=dict)
    # (sender, emoji) -> (seq, on) of the highest-seq reaction entry.
    reactions: dict[tuple[str, str], tuple[int, bool]] = field(default_factory=dict)


class ConversationView:
    """The current view of one conversation, from its messages in any order.

    ``me`` is this user's id (for :attr:`ReactionCount.me`). Feed every
    :class:`~tidings_client.frames.Message` of the conversation to
    :meth:`apply` (live, synced or from the store), mark what this user hid
    with :meth:`hide`, and read :meth:`entries`.
    """

    def __init__(self, me: str) -> None:
        self.me = me
        self.conversation_id: str | None = None
        self._messages: dict[int, Message] = {}
        self._changes: dict[int, _Changes] = {}
        self._seen: set[int] = set()
        self._hidden: set[int] = set()

    def apply(self, message: Message) -> bool:
        """Take one message in; ``False`` for a seq already applied (a duplicate).

        Raises :class:`ValueError` for a message of another conversation
        (one view per conversation).
        """
        if self.conversation_id is None:
            self.conversation_id = message.conversation_id
        elif message.conversation_id != self.conversation_id:
            raise ValueError(
                f"message of {message.conversation_id} applied to the view of "
                f"{self.conversation_id}"
            )
        if message.seq in self._seen:
            return False
        self._seen.add(message.seq)
        if message.kind not in SIDE_KINDS:
            self._messages[message.seq] = message
            return True
        side = parse_content(message.content)
        if isinstance(side, EditContent):
            changes = self._changes_of(side.target)
            if side.deleted:
                changes.deleted = True
            elif side.text is not None:
                changes.edits[message.seq] = (message.ts, side.text)
        elif isinstance(side, DeleteContent):
            self._changes_of(side.target).deleted = True
        elif isinstance(side, ReactionContent):
            reactions = self._changes_of(side.target).reactions
            key = (message.sender_id, side.emoji)
            if key not in reactions or reactions[key][0] < message.seq:
                reactions[key] = (message.seq, side.on)
        # A side entry this SDK cannot read changes nothing it could show.
        return True

    def apply_all(self, messages: Iterable[Message]) -> None:
        """:meth:`apply` each message."""
        for message in messages:
            self.apply(message)

    def hide(self, seqs: Iterable[int]) -> None:
        """This user hid these messages ("delete for me"): leave them out."""
        self._hidden.update(seqs)

    def unhide(self, seqs: Iterable[int]) -> None:
        """Show these messages again."""
        self._hidden.difference_update(seqs)

    @property
    def hidden(self) -> frozenset[int]:
        """The seqs left out by :meth:`hide`."""
        return frozenset(self._hidden)

    def entries(self) -> list[ViewEntry]:
        """Every message a person sees, in seq order, as the server's ``view=current``.

        Changes whose target is not held yet are kept and show once it is.
        """
        return [
            self._entry(message)
            for seq, message in sorted(self._messages.items())
            if seq not in self._hidden
        ]

    def _changes_of(self, target: int) -> _Changes:
        changes = self._changes.get(target)
        if changes is None:
            changes = self._changes[target] = _Changes()
        return changes

    def _entry(self, message: Message) -> ViewEntry:
        changes = self._changes.get(message.seq, _Changes())
        base = ViewEntry(
            message.seq,
            message.message_id,
            message.sender_id,
            message.client_msg_id,
            message.ts,
            message.content,
        )
        if changes.deleted or isinstance(parse_content(message.content), DeletedContent):
            return msgspec.structs.replace(base, content=dict(DELETED), deleted=True)
        content = message.content
        edited_ts: int | None = None
        if changes.edits:
            edited_ts, text = changes.edits[max(changes.edits)]
            content = {**content, "text": text}
        return msgspec.structs.replace(
            base,
            content=content,
            edited=edited_ts is not None,
            edited_ts=edited_ts,
            reactions=self._reaction_counts(changes),
        )

    def _reaction_counts(self, changes: _Changes) -> tuple[ReactionCount, ...]:
        counts: dict[str, int] = {}
        mine: set[str] = set()
        for (sender, emoji), (_, on) in changes.reactions.items():
            if on:
                counts[emoji] = counts.get(emoji, 0) + 1
                if sender == self.me:
                    mine.add(emoji)
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        return tuple(ReactionCount(emoji, count, emoji in mine) for emoji, count in ranked)
