"""What a feature hands the change log: a worker fed every stored message in order.

Search indexes, push senders and moderation queues all follow the seq stream
after the fact, off the send path. A feature declares its workers; the
runner that feeds them (reading the change log, checkpointing, retrying)
lives in ``tidings.changelog``. This module only names the shape, so that a
feature and the runner agree without importing each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from tidings.core.models import Message


class ChangeWorker(Protocol):
    """Handles batches of stored messages, oldest first; ``name`` keys its checkpoint."""

    @property
    def name(self) -> str: ...

    async def handle(self, batch: Sequence[Message]) -> None:
        """Process ``batch``; raising makes the runner offer the same batch again."""
