"""Each user's hidden messages ("delete for me"), the same on all their devices.

Hiding is the user's own view: the entries stay in the conversation for
everyone else, and unhiding brings them back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class HiddenStore(Protocol):
    async def set_hidden(
        self, user_id: str, conversation_id: str, seqs: Sequence[int], hidden: bool
    ) -> list[int]:
        """Hide (or unhide) ``seqs`` for the user; returns every seq the user
        has hidden in the conversation after the change, ascending. Hiding a
        hidden seq or unhiding a shown one changes nothing."""
        ...

    async def hidden_seqs(self, user_id: str, conversation_id: str) -> list[int]:
        """Every seq the user has hidden in the conversation, ascending."""
        ...
