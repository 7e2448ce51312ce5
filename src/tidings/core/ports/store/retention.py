"""The retention purge: entries older than their conversation's policy go.

A conversation's policy is its own ``retention_days`` when set (0: keep for
ever), else the server's. What goes is a prefix of the seq stream: every
entry from the first still held up to the first that has not expired yet
(clocks of several nodes may differ a little, so an entry may wait for an
older-stamped one after it; a prefix keeps "history starts at seq N" true).
The conversation's ``purged_seq`` records it, and listings report
``history_start = purged_seq + 1``, so that a device that was offline longer
than the policy sees a gap, not silence.
"""

from __future__ import annotations

from typing import Protocol

from tidings.core.models import PurgeResult


class RetentionStore(Protocol):
    async def purge_expired(self, now: int, default_days: int, max_entries: int) -> PurgeResult:
        """Remove expired entries (and their hidden marks) as a delete does,
        at most about ``max_entries`` in one transaction (the caller repeats
        while ``entries`` is not 0). ``default_days`` 0 keeps conversations
        without a policy of their own for ever."""
        ...
