"""The presence protocol: soft, expiring state about users and conversations.

Presence is derived, never declared: a user is online while at least one of
their sessions (one per connection, over all devices and nodes) is alive, and
a session is alive only while its node keeps refreshing it. Everything here
expires on its own, so a crashed node, a killed app or a lost ``close`` can
never leave a user "online" or "typing" for longer than a TTL. Every backend
passes ``tests/presence/test_conformance.py``. Contract:

- ``session_alive`` (connect and every heartbeat) keeps a session alive for
  ``ttl_s`` from now; ``session_gone`` (the connection closed) keeps it for
  ``grace_s`` more, so that a quick reconnect does not flap offline.
- ``get`` aggregates a user's sessions: ``online`` if any is alive, ``away``
  if any is alive and the user's own choice is away, else ``offline``. The
  user's choice (``set_status``) lasts until changed or until the user has
  been offline: the first session of a user who was offline starts online.
- ``last_seen`` (ms since the epoch, 0 if never seen) is the latest time a
  session of the user was heard from (``session_alive`` / ``session_gone``),
  kept for ``LAST_SEEN_TTL_S``. It is the last *contact*, not the end of the
  grace period or TTL: a user who left at 12:00 shows "last seen 12:00".
- Typing entries live for their TTL unless cleared; ``typing_in`` returns only
  entries that are live at the moment it answers, never stale ones, which is
  what makes a reconnecting client see the current state and not a replay.
- Times are the backend's own clock (the injected clock in memory, the Redis
  server's clock in Redis), so nodes with skewed clocks agree on expiry.
- A backend that cannot reach its storage raises ``TidingsError(UNAVAILABLE)``
  within a bounded time; callers treat presence as best-effort.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal, Protocol

UserStatus = Literal["online", "away"]
"""What a user may say about themselves (the ``presence`` client frame)."""

PresenceStatus = Literal["online", "away", "offline"]
"""What others see (the ``presence`` server frame)."""

Clock = Callable[[], int]
"""Wall-clock milliseconds since the Unix epoch."""

# last_seen outlives the sessions by this much: long enough for "last seen 3
# weeks ago" to be answerable, short enough that users who left the service
# do not cost storage forever.
LAST_SEEN_TTL_S = 30 * 24 * 3600


def wall_clock_ms() -> int:
    """The default :data:`Clock`: wall time, because ``last_seen`` is shown to
    people and compared across nodes, which a monotonic clock cannot be."""
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class Presence:
    """A user's aggregated presence."""

    status: PresenceStatus
    last_seen: int  # ms since the epoch; 0 when the user was never seen


OFFLINE_NEVER_SEEN = Presence("offline", 0)


@dataclass(frozen=True, slots=True)
class Typing:
    """One user typing in one conversation, live when it was read."""

    conversation_id: str
    user_id: str
    expires_at_ms: int  # on the backend's clock
    # Remaining lifetime when the backend answered. The wire's ``expires_ms``
    # is a duration; computing it here rather than from ``expires_at_ms`` and
    # the node's clock keeps it free of node-vs-Redis clock skew.
    expires_in_ms: int


class PresenceStore(Protocol):
    async def start(self) -> None:
        """Prepare (connect lazily is fine); must not fail when storage is
        down, so that a node can start before its Redis."""

    async def close(self) -> None:
        """Release connections (idempotent). Stored state stays: it expires."""

    async def ping(self) -> None:
        """Return if the storage answers, else raise ``UNAVAILABLE`` (readiness)."""

    async def session_alive(self, user_id: str, session_id: str, ttl_s: float) -> None:
        """Session ``session_id`` of ``user_id`` is alive for ``ttl_s`` from now
        (connect and every heartbeat); also updates ``last_seen``."""

    async def sessions_alive(self, items: Iterable[tuple[str, str]], ttl_s: float) -> None:
        """``session_alive`` for many (user_id, session_id) pairs in one round
        trip: a node refreshing all of its sessions on one timer."""

    async def session_gone(self, user_id: str, session_id: str, grace_s: float) -> None:
        """The connection closed: the session counts for ``grace_s`` more, then
        expires (``grace_s`` 0 ends it now); also updates ``last_seen``."""

    async def set_status(self, user_id: str, status: UserStatus) -> None:
        """The user's own choice, kept until changed or until they are offline."""

    async def get(self, user_ids: Iterable[str]) -> dict[str, Presence]:
        """Presence of each user (unknown users: offline, last_seen 0)."""

    async def set_typing(self, conversation_id: str, user_id: str, ttl_s: float) -> None:
        """``user_id`` types in ``conversation_id`` for ``ttl_s`` from now
        (start, and every refresh)."""

    async def clear_typing(self, conversation_id: str, user_id: str) -> None:
        """``user_id`` stopped typing in ``conversation_id`` (idempotent)."""

    async def clear_typing_for(self, user_id: str, conversation_ids: Iterable[str]) -> None:
        """``clear_typing`` in each conversation: the typist's last connection
        closed, so whatever they were typing will not be sent."""

    async def typing_in(self, conversation_ids: Iterable[str]) -> list[Typing]:
        """Typing entries in these conversations that are live now, ordered by
        conversation (as given) then user id."""
