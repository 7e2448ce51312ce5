"""What search needs of an index engine: the port both engines implement.

An index holds *generations*: the live one answers queries and follows the
change log; a rebuild fills a new one beside it from the store and then
promotes it, which drops the old one (no downtime, ``keeper.py``). Each
generation records the change-stream position it has applied up to, so
whoever promotes or notices a new generation can catch it up from there.

Every query joins the caller's membership, ``visible_after`` and the
conversation's ``purged_seq`` inside the engine's own statement: what the
caller may not read is never selected, so a page is never filtered after
the fact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from tidings.features.search.query import Cursor, Query


class IndexCorrupt(Exception):
    """The index's files (or tables) cannot be read or written as an index: rebuild it."""


class GenerationGone(Exception):
    """The generation was dropped meanwhile (another process promoted a newer one)."""


@dataclass(frozen=True, slots=True)
class Generation:
    name: str
    position: int
    """Every change up to this change-stream position is applied."""


@dataclass(frozen=True, slots=True)
class Put:
    """Index a message (a replayed one replaces what was there)."""

    conversation_id: str
    seq: int
    sender_id: str
    ts: int
    text: str


@dataclass(frozen=True, slots=True)
class Edit:
    """Replace an indexed message's text; nothing if it is not indexed."""

    conversation_id: str
    seq: int
    text: str


@dataclass(frozen=True, slots=True)
class Remove:
    """Drop an indexed message (deleted for everyone)."""

    conversation_id: str
    seq: int


Op = Put | Edit | Remove


@dataclass(frozen=True, slots=True)
class Hit:
    conversation_id: str
    seq: int
    sender_id: str
    ts: int
    text: str
    score: float
    """The sort key: lower first (the cursor resumes after it)."""


@dataclass(frozen=True, slots=True)
class Search:
    """One page of a search, for ``user_id``."""

    user_id: str
    query: Query
    limit: int
    after: Cursor | None = None


class SearchIndex(Protocol):
    """An index engine (``sqlite.py``, ``postgres.py``)."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def live(self) -> Generation | None:
        """The live generation, or None if there is none (never built, or lost).
        Raises :class:`IndexCorrupt` if it cannot tell."""
        ...

    async def check(self, generation: Generation) -> None:
        """Read the generation through; :class:`IndexCorrupt` if it is damaged."""
        ...

    async def create(self) -> Generation:
        """A new, empty generation beside the live one, at position 0."""
        ...

    async def apply(self, generation: Generation, ops: Sequence[Op], position: int) -> Generation:
        """Apply ``ops`` in order and record ``position``, in one transaction."""
        ...

    async def promote(self, generation: Generation) -> None:
        """Make ``generation`` the live one and drop the one it replaces."""
        ...

    async def discard(self, generation: Generation) -> None:
        """Drop a generation that will not be promoted (a failed rebuild)."""
        ...

    async def expire(self, generation: Generation, before_ts: int) -> int:
        """Drop entries older than ``before_ts`` and those at or below their
        conversation's ``purged_seq``; how many were dropped."""
        ...

    async def search(self, generation: Generation, search: Search) -> list[Hit]:
        """Up to ``search.limit`` hits the caller may read, best first."""
        ...

    async def scan(self, search: Search) -> list[Hit]:
        """The slower path, from the store's own messages without the index:
        texts as sent (no edits, stemming or folding), newest first."""
        ...
