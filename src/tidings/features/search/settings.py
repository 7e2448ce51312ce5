"""The search feature's settings: ``[tidings.search]`` / ``TIDINGS_SEARCH_*``
(docs/operations.md, "Search")."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SearchSettings:
    index_dir: str = ""
    """Where the embedded (SQLite) index keeps its files; empty: ``search/``
    beside the store's file. Unused with PostgreSQL (the index is tables of
    the store's database)."""
    index_days: int = 0
    """Index messages of the last this many days (0: all); older ones are
    found only through the store's slower path (a ``before:`` older than the
    window), and the sweep drops them from the index."""
    page_limit: int = 50
    """Most results one search call answers (``limit`` is capped to it)."""
    rebuild_batch: int = 1000
    """Changes read from the store per step of a rebuild or catch-up."""
    sweep_s: float = 300.0
    """How often the live index is checked (SQLite: ``PRAGMA quick_check``)
    and expired entries are dropped."""

    def __post_init__(self) -> None:
        for name in ("page_limit", "rebuild_batch", "sweep_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"search setting {name} must be positive")
