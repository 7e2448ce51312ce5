"""The store protocol: the durable source of truth for accounts, conversations,
messages and cursors.

Every backend passes ``tests/store/test_conformance.py`` unchanged. Contracts that
the core relies on:

- ``append`` assigns ``seq = last_seq + 1`` in the same transaction that saves
  the message, so seqs per conversation are gap-free and unique however many
  writers race; a known ``(sender_id, client_msg_id)`` returns the stored
  message with ``duplicate=True`` and writes nothing.
- Appends take effect in the order their calls were made, and so do cursor
  moves: a call enters its store's queue before it first yields, and the
  queue's batches commit one at a time. Two appends started one after the
  other get seqs in that order even while the first still waits to commit;
  the gateway relies on it to keep several of a connection's sends in flight
  (``gateway/session.py``).
- A method that raises has changed nothing.
- Failures to reach the database raise ``TidingsError(UNAVAILABLE)`` so that
  clients retry; domain rejections raise the matching code (``not_member``,
  ``not_found``, ``conflict``).
- Cursors only move forward and never past ``last_seq``.
- ``version`` is a store-wide counter bumped by every append; a conversation
  remembers the version of its last append, which makes "what changed since
  token T" one indexed comparison (sync cost grows with what changed).
- Every stored message carries the version of the append that stored it, its
  *position* in the change stream. ``changes_after(p)`` never returns a
  position while a smaller one may still commit, so a consumer that resumes
  from the ``next_position`` it was given never skips a message (on
  PostgreSQL, where versions commit out of order, it answers up to the same
  low-water mark as sync tokens; ``docs/architecture.md``, "The change log
  and its workers").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from tidings.core.models import (
    Account,
    AppendResult,
    ChangeBatch,
    Conversation,
    ConversationKind,
    ConversationState,
    Credentials,
    CursorState,
    Device,
    Member,
    Message,
    NewMessage,
    ReceiptCounts,
    ReconcileReport,
    Restore,
    User,
)


class Store(Protocol):
    """Durable storage. All methods are coroutines safe to call concurrently."""

    @property
    def epoch(self) -> str:
        """Random id fixed when the store was created; changed by a restore."""
        ...

    async def start(self) -> None:
        """Open connections and apply migrations (idempotent)."""

    async def close(self) -> None:
        """Flush pending writes and release connections."""

    async def ping(self) -> None:
        """Return if the database answers, else raise ``UNAVAILABLE`` (readiness)."""

    # -- restores from backup (docs/reliability.md, "Disaster recovery") -----
    async def backup_time(self) -> int | None:
        """When the history in this store ends (ms): the stamp ``tidings backup``
        wrote into the copy, else (no stamp: a ``pg_restore``, an old backup)
        the newest message's or conversation's time, since anything after it
        may be lost; ``None`` for an empty store."""
        ...

    async def record_restore(self, backup_ts: int, restored_ts: int) -> Restore:
        """Give the store a new random epoch and record the restore, atomically:
        run after restoring a backup, so that clients learn that history after
        ``backup_ts`` is gone. Consumes the backup stamp."""
        ...

    async def latest_restore(self) -> Restore | None:
        """The most recent :meth:`record_restore`, if any."""
        ...

    async def save_reconcile_report(self, report: ReconcileReport) -> None:
        """Store a device's report for an epoch, replacing its previous one.

        Every conversation must be one the user is a member of
        (``NOT_MEMBER``, and nothing is stored).
        """
        ...

    async def reconcile_reports(self, epoch: str) -> list[ReconcileReport]:
        """The reports for ``epoch``, by device_id, each one's gaps by conversation_id."""
        ...

    # -- accounts ---------------------------------------------------------
    async def create_user(self, username: str, password_hash: str, now: int) -> User:
        """Create a user; ``CONFLICT`` if the username (case-insensitive) is taken."""
        ...

    async def get_user(self, user_id: str) -> User | None: ...

    async def get_credentials(self, username: str) -> Credentials | None:
        """The user, password hash and disabled flag for a username (case-insensitive)."""
        ...

    async def list_accounts(self, after_username: str = "", limit: int = 100) -> list[Account]:
        """Accounts ordered by lower-cased username, from after ``after_username`` (a page)."""
        ...

    async def set_disabled(self, user_id: str, disabled: bool, now: int) -> bool:
        """Disable (revoking every device's token in the same transaction) or
        re-enable an account; True if the flag changed, ``NOT_FOUND`` if no user."""
        ...

    async def set_password_hash(self, user_id: str, password_hash: str, now: int) -> int:
        """Replace the password hash and revoke every device's token (a reset signs
        the account out everywhere); return how many tokens were revoked."""
        ...

    async def create_device(self, user_id: str, name: str, token_hash: str, now: int) -> Device:
        """Register a device (one login) whose bearer token hashes to ``token_hash``;
        ``NOT_FOUND`` for an unknown user, ``FORBIDDEN`` for a disabled one (a
        login racing ``set_disabled`` cannot leave a live token behind)."""
        ...

    async def device_for_token(self, token_hash: str) -> Device | None:
        """The live (not revoked) device for a token hash, else None."""
        ...

    async def revoke_device(self, device_id: str) -> bool:
        """Revoke a device's token; True if it was live."""
        ...

    # -- conversations ----------------------------------------------------
    async def create_conversation(
        self,
        kind: ConversationKind,
        creator_id: str,
        member_ids: Sequence[str],
        title: str | None,
        now: int,
    ) -> tuple[Conversation, bool]:
        """Create a conversation; the creator is a member (and a group's admin).

        ``member_ids`` are the others (unknown users: ``NOT_FOUND``). A direct
        conversation is unique per pair: asking again returns the existing one
        with ``created=False``.
        """
        ...

    async def get_conversation(self, conversation_id: str) -> Conversation | None: ...

    async def get_members(self, conversation_id: str) -> list[Member]:
        """Current members with their cursors, ordered by user_id."""
        ...

    async def change_members(
        self,
        conversation_id: str,
        add: Sequence[str],
        remove: Sequence[str],
        event: NewMessage,
    ) -> AppendResult | None:
        """Add/remove members and append ``event`` (its content describes the
        change) in one transaction. Adding a member already present or removing
        an absent one is a no-op; when nothing changes, nothing is appended and
        None is returned. Unknown users: ``NOT_FOUND``.
        """
        ...

    # -- messages -----------------------------------------------------------
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
    ) -> list[Message]:
        """Messages with ``after_seq < seq < before_seq``, in seq order; with
        ``newest_first`` the ``limit`` highest of them (still returned ascending).
        """
        ...

    # -- cursors and listings ----------------------------------------------
    async def advance_cursors(
        self,
        conversation_id: str,
        user_id: str,
        device_id: str,
        delivered_seq: int | None,
        read_seq: int | None,
    ) -> CursorState:
        """Move the device's and the member's cursors forward (never back, and
        clamped to ``last_seq``); ``read`` implies ``delivered``. ``NOT_MEMBER``
        if the user is not a member.
        """
        ...

    async def list_conversations(
        self, user_id: str, device_id: str, changed_after: int = 0
    ) -> tuple[list[ConversationState], int]:
        """The user's conversations whose version is above ``changed_after``
        (all with 0), ordered by version, and the store's current version.
        """
        ...

    async def receipt_counts(self, conversation_id: str, seq: int) -> ReceiptCounts:
        """How many members have delivered / read at least ``seq``."""
        ...

    # -- the change stream and its consumers ----------------------------------
    async def changes_after(self, position: int, limit: int = 100) -> ChangeBatch:
        """Up to ``limit`` stored messages (membership events included) with a
        position above ``position``, in position order, and where to resume.

        Messages stored before the change stream existed (schema upgrades
        from before it) have no position and are not listed.
        """
        ...

    async def consumer_position(self, name: str) -> int:
        """Where the consumer ``name`` resumes (0 for one never saved)."""
        ...

    async def take_consumer_lease(self, name: str, holder: str, lease_ms: int) -> bool:
        """Make ``holder`` the one active consumer ``name`` for ``lease_ms`` from
        now (by the database's clock): True if it already was or the previous
        holder's lease has expired (or was released), else False."""
        ...

    async def save_consumer_position(
        self, name: str, position: int, holder: str, lease_ms: int
    ) -> bool:
        """Save the consumer's position (never moving it back) and renew the
        lease, if ``holder`` still holds it; False (nothing saved) if another
        holder has taken it over, so that a stalled consumer learns it is out."""
        ...

    async def release_consumer_lease(self, name: str, holder: str) -> None:
        """End ``holder``'s lease now (a stopping node), so another takes over at once."""
        ...
