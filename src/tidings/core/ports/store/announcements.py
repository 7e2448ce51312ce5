"""Announcements: bus events that an admin command leaves in the store for a
node whose bus is in-process (``memory://``), where nothing outside the node
can publish (docs/architecture.md, "Admin commands and running nodes").

Ids increase; on PostgreSQL they may commit out of order, so a reader
re-reads a short window behind its position (events are idempotent to
handle twice: close these sessions, subscribe to this conversation).
"""

from __future__ import annotations

from typing import Protocol

import msgspec


class Announcement(msgspec.Struct, frozen=True):
    id: int
    topic: str
    payload: bytes


class AnnouncementStore(Protocol):
    async def announce(self, topic: str, payload: bytes, now: int) -> None:
        """Store one event for the node to publish on its bus."""
        ...

    async def announcements_after(self, after_id: int, limit: int) -> list[Announcement]:
        """Up to ``limit`` announcements with an id above ``after_id``, by id."""
        ...

    async def last_announcement(self) -> int:
        """The highest announcement id (0 for none): where a starting node begins."""
        ...

    async def prune_announcements(self, before: int) -> int:
        """Delete announcements made before ``before`` (ms); how many went."""
        ...
