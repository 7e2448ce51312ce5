"""Per-conversation record of which seqs the client holds.

This is the client half of the delivery guarantee ("clients deduplicate by
(conversation_id, seq)"). It lives outside :class:`ClientProtocol` so that it
can outlive one connection: a reconnecting client (and, later, one restored
from its SQLite store) hands the same :class:`Cursors` to the next protocol
instance and keeps deduplicating and resuming from where it was.

Held seqs are kept as sorted, disjoint, inclusive ranges, so memory grows with
the number of *gaps*, not with the number of messages: a conversation
received in order is one range however long it gets.

The cursor of a conversation is the top of its lowest held run: the highest
seq ``h`` such that the client holds every seq from the first one it holds up
to ``h``. A seeded cursor ``c`` (``set``) means "holds 1..c". When the client
knows nothing about a conversation and the server starts it somewhere above 1
(a sync without explicit cursors starts at this device's delivered cursor), the
SDK trusts that choice: what came before was already confirmed by this device.
Seqs held above the cursor, after a gap, are kept for deduplication and are
what gap detection (a later issue) looks at via :meth:`Cursors.gaps`.
"""

from __future__ import annotations

import bisect
import itertools


class _HeldSeqs:
    """Sorted disjoint inclusive ranges ``[lo, hi]`` of held seqs."""

    __slots__ = ("_his", "_los")

    def __init__(self) -> None:
        self._los: list[int] = []
        self._his: list[int] = []

    def __contains__(self, seq: int) -> bool:
        i = bisect.bisect_right(self._los, seq) - 1
        return i >= 0 and seq <= self._his[i]

    def add_range(self, lo: int, hi: int) -> None:
        """Add ``[lo, hi]``, merging with every range it touches or overlaps."""
        if hi < lo:
            return
        # First range that could touch: its hi >= lo - 1.
        start = bisect.bisect_left(self._his, lo - 1)
        end = start
        while end < len(self._los) and self._los[end] <= hi + 1:
            lo = min(lo, self._los[end])
            hi = max(hi, self._his[end])
            end += 1
        self._los[start:end] = [lo]
        self._his[start:end] = [hi]

    def ranges(self) -> list[tuple[int, int]]:
        return list(zip(self._los, self._his, strict=True))

    def lowest_run_top(self) -> int:
        return self._his[0] if self._his else 0


class Cursors:
    """Which seqs the client holds, per conversation; see the module docstring."""

    def __init__(self, initial: dict[str, int] | None = None) -> None:
        self._held: dict[str, _HeldSeqs] = {}
        for conversation_id, seq in (initial or {}).items():
            self.set(conversation_id, seq)

    def observe(self, conversation_id: str, seq: int) -> bool:
        """Record that ``seq`` is held; ``False`` when it was already held (a duplicate)."""
        held = self._held.get(conversation_id)
        if held is None:
            held = self._held[conversation_id] = _HeldSeqs()
        if seq in held:
            return False
        held.add_range(seq, seq)
        return True

    def set(self, conversation_id: str, seq: int) -> None:
        """Declare that every seq up to ``seq`` is held (e.g. restored from storage).

        Cursors only move forward: a lower value than the current one changes nothing.
        """
        if seq < 0:
            raise ValueError(f"seq must be >= 0, got {seq}")
        if seq <= self.cursor(conversation_id):
            return
        held = self._held.get(conversation_id)
        if held is None:
            held = self._held[conversation_id] = _HeldSeqs()
        held.add_range(1, seq)

    def cursor(self, conversation_id: str) -> int:
        """The highest seq of the lowest contiguous run held; 0 when nothing is held."""
        held = self._held.get(conversation_id)
        return held.lowest_run_top() if held is not None else 0

    def holds(self, conversation_id: str, seq: int) -> bool:
        held = self._held.get(conversation_id)
        return held is not None and seq in held

    def snapshot(self) -> dict[str, int]:
        """Every known conversation's cursor, as the ``cursors`` of a ``sync`` frame."""
        return {cid: held.lowest_run_top() for cid, held in self._held.items()}

    def gaps(self, conversation_id: str) -> list[tuple[int, int]]:
        """Missing ``[lo, hi]`` ranges between the cursor and the highest seq held."""
        held = self._held.get(conversation_id)
        if held is None:
            return []
        ranges = held.ranges()
        return [(prev_hi + 1, lo - 1) for (_, prev_hi), (lo, _) in itertools.pairwise(ranges)]
