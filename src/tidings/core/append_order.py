"""Keeping one connection's sends in the order they arrived.

A connection's sends are answered concurrently (several in flight), and the
store takes appends in the order its ``append`` calls are made
(``core/ports/store/messages.py``). A plain text reaches ``append`` without
awaiting anything, so arrival order is append order for free. A send whose
kind has a rule awaits store reads first (who wrote the target?), and a
plain text sent right behind it would overtake it: an edit sent after a
delete of the same message could be stored before it.

:class:`AppendOrder` restores the order only where it is at risk: a send
that must await before its append, and every send behind one that is still
waiting, takes a turn (a future) and appends only after its predecessor's
turn is over; a plain text with no one waiting ahead appends at once,
allocating nothing.
"""

from __future__ import annotations

import asyncio


class AppendOrder:
    """The turns of one connection's waiting sends (created on its first one)."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last: asyncio.Future[None] | None = None

    def waiting(self) -> bool:
        """Whether a send of this connection has not reached the store yet."""
        return self._last is not None and not self._last.done()

    def take_turn(self) -> tuple[asyncio.Future[None] | None, asyncio.Future[None]]:
        """The turn to wait for (None: none) and this send's own, which it must
        end (``set_result``) right before its append, or when it gives up."""
        previous = self._last if self.waiting() else None
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._last = mine
        return previous, mine
