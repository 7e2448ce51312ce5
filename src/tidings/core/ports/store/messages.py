"""The message log: appends, history and the ordered change stream.

Contracts that the core relies on:

- ``append`` assigns ``seq = last_seq + 1`` in the same transaction that saves
  the message, so seqs per conversation are gap-free and unique however many
  writers race; a known ``(sender_id, client_msg_id)`` returns the stored
  message with ``duplicate=True`` and writes nothing.
- Appends take effect in the order their calls were made (as do cursor moves,
  :mod:`.cursors`): a call enters its store's queue before it first yields,
  and the queue's batches commit one at a time. Two appends started one after
  the other get seqs in that order even while the first still waits to
  commit; the gateway relies on it to keep several of a connection's sends in
  flight (``gateway/session.py``).
- Every append bumps the store-wide ``version`` (:mod:`.cursors` lists by it).
- An entry with a target (``NewMessage.target``) is checked in its append's
  transaction: the target must be a stored entry of the conversation with
  no target of its own (``NOT_FOUND`` otherwise) and not deleted
  (``FORBIDDEN``). A redacting entry (a delete for everyone) replaces, in
  that same transaction, the target's content with ``{"kind":"deleted"}``
  and each edit of it with ``{"kind":"edit","target":T,"deleted":true}``,
  and clears their mentions: what was said is gone from the store (on
  SQLite, with ``secure_delete``, from the database file's live pages too).
- Every stored message carries the version of the append that stored it, its
  *position* in the change stream. ``changes_after(p)`` never returns a
  position while a smaller one may still commit, so a consumer that resumes
  from the ``next_position`` it was given never skips a message (on
  PostgreSQL, where versions commit out of order, it answers up to the same
  low-water mark as sync tokens; ``docs/architecture.md``, "The change log
  and its workers").
"""

from __future__ import annotations

from typing import Protocol

from tidings.core.models import AppendResult, ChangeBatch, Message, NewMessage


class MessageLog(Protocol):
    async def append(self, message: NewMessage) -> AppendResult:
        """Store a message at the next seq (see the module contract).

        The sender must be a member (``NOT_MEMBER``, also for an unknown
        conversation). The sender's own cursors (member delivered/read and the
        sending device's delivered) advance to the new seq only where they
        stood at ``seq - 1``: a cursor never skips a message the device has not
        been given (replying to a conversation read to the end keeps it read).
        """
        ...

    async def history(
        self,
        conversation_id: str,
        after_seq: int = 0,
        before_seq: int | None = None,
        limit: int = 100,
        newest_first: bool = False,
        primary_only: bool = False,
    ) -> list[Message]:
        """Messages with ``after_seq < seq < before_seq``, in seq order; with
        ``newest_first`` the ``limit`` highest of them (still returned ascending).
        ``primary_only`` leaves out side entries (those with a target: edits,
        deletes, reactions), for views that fold them into their targets.
        """
        ...

    async def find_sent(self, sender_id: str, client_msg_id: str) -> Message | None:
        """The message ``sender_id`` stored with ``client_msg_id``, if any (what
        a retry of it is answered with)."""
        ...

    async def related(self, conversation_id: str, first_seq: int, last_seq: int) -> list[Message]:
        """The side entries whose target is in ``first_seq..last_seq``, in seq order."""
        ...

    async def changes_after(self, position: int, limit: int = 100) -> ChangeBatch:
        """Up to ``limit`` stored messages (membership events included) with a
        position above ``position``, in position order, and where to resume.

        Messages stored before the change stream existed (schema upgrades
        from before it) have no position and are not listed.
        """
        ...
