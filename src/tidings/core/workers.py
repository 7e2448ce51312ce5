"""What a change-log worker implements: the port between features and the runner.

Search indexes, push senders and moderation queues all follow the store's
change stream after the fact, off the send path. A feature declares its
workers; the runner that feeds them (reading the change log, saving the
position, leases, retries) lives in ``tidings.changelog``. This module only
names the shape, so that a feature and the runner agree without importing
each other.
"""

from __future__ import annotations

from typing import Protocol

from tidings.core.models import ChangeBatch


class ChangeWorker(Protocol):
    """A consumer of the store's change stream (search indexing, push...).

    Delivery is at least once: a batch whose handling failed or was cut
    short (an exception, a node killed, a lease lost) is handed over again,
    so ``handle`` must be idempotent, for instance keyed by
    ``message_id`` or by ``(conversation_id, seq)``. Within a batch, and
    from one batch to the next, changes come in position order, so each
    conversation's messages come in seq order.
    """

    @property
    def name(self) -> str:
        """Names the worker's saved position and lease: the same on every node,
        and never reused for a different worker (it would resume elsewhere)."""
        ...

    async def handle(self, batch: ChangeBatch) -> None:
        """Handle every change of ``batch``; raise to have it handed over again."""
        ...
