"""The in-process presence store: the default for a single node, and a
complete reference backend (not a mock) that passes the same conformance
suite as Redis.

All expiry is decided by the injected clock, so tests move time forward by
hand instead of sleeping. State that nobody can observe any more (dead
sessions, expired typing, last_seen older than ``LAST_SEEN_TTL_S``) is pruned
when the entry is next touched and by a sweep over everything at most once
per ``SWEEP_INTERVAL_MS``, so memory stays proportional to the users seen in
the last ``LAST_SEEN_TTL_S`` however long the process runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from tidings.core.ports.presence import (
    LAST_SEEN_TTL_S,
    OFFLINE_NEVER_SEEN,
    Clock,
    Presence,
    Typing,
    UserStatus,
    wall_clock_ms,
)

# A full sweep is O(users + conversations); once a minute keeps its cost
# negligible while bounding how long unobservable state lingers.
SWEEP_INTERVAL_MS = 60_000

_LAST_SEEN_TTL_MS = LAST_SEEN_TTL_S * 1000


def ttl_ms(seconds: float, *, allow_zero: bool = False) -> int:
    """A TTL in whole milliseconds; rejects what would be a caller's bug.

    At most ``LAST_SEEN_TTL_S``: a user's whole entry lives that long after
    its last write, so a longer lease could not be honoured (leases are
    seconds in practice: heartbeats, grace periods, typing)."""
    if not (0 <= seconds <= LAST_SEEN_TTL_S) or (seconds == 0 and not allow_zero):
        raise ValueError(f"invalid TTL: {seconds!r} s")
    return round(seconds * 1000)


def check_status(status: str) -> None:
    if status not in ("online", "away"):
        raise ValueError(f"invalid status: {status!r} (online or away)")


@dataclass
class _User:
    sessions: dict[str, int] = field(default_factory=dict)  # session_id -> expires_at_ms
    away: bool = False
    last_seen: int = 0
    forget_at: int = 0  # when the whole entry may go (last write + LAST_SEEN_TTL)
    # No session expires before this (a lower bound: renewals only move
    # expiries later), so prune scans the sessions only when one may have
    # expired, not on every call: an account shared by many connections
    # (a bot, a load test) would otherwise cost O(sessions) per connect.
    next_expiry: int = 0

    def prune(self, now: int) -> int:
        """Drop dead sessions; how many are alive."""
        if now < self.next_expiry:
            return len(self.sessions)
        dead = [sid for sid, expires in self.sessions.items() if expires <= now]
        for sid in dead:
            del self.sessions[sid]
        self.next_expiry = min(self.sessions.values(), default=now + _LAST_SEEN_TTL_MS)
        return len(self.sessions)

    def expire_at(self, session_id: str, when: int) -> None:
        self.sessions[session_id] = when
        self.next_expiry = min(self.next_expiry, when)


class MemoryPresence:
    """A :class:`~tidings.core.ports.presence.PresenceStore` in this process's memory."""

    def __init__(self, clock: Clock = wall_clock_ms) -> None:
        self._clock = clock
        self._users: dict[str, _User] = {}
        # conversation_id -> user_id -> expires_at_ms
        self._typing: dict[str, dict[str, int]] = {}
        self._next_sweep = 0

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        # State is kept: like Redis, it outlives a client and simply expires.
        return None

    async def ping(self) -> None:
        return None

    # -- sessions ------------------------------------------------------------

    def _now(self) -> int:
        now = self._clock()
        if now >= self._next_sweep:
            self._sweep(now)
            self._next_sweep = now + SWEEP_INTERVAL_MS
        return now

    def _touch(self, user_id: str, now: int) -> _User:
        user = self._users.get(user_id)
        if user is None or user.forget_at <= now:
            user = self._users[user_id] = _User()
        user.forget_at = now + _LAST_SEEN_TTL_MS
        return user

    async def session_alive(self, user_id: str, session_id: str, ttl_s: float) -> None:
        ttl = ttl_ms(ttl_s)
        now = self._now()
        self._alive(user_id, session_id, now, ttl)

    def _alive(self, user_id: str, session_id: str, now: int, ttl: int) -> None:
        user = self._touch(user_id, now)
        if user.prune(now) == 0:
            user.away = False  # they were offline: their old choice is over
        user.expire_at(session_id, now + ttl)
        user.last_seen = max(user.last_seen, now)

    async def sessions_alive(self, items: Iterable[tuple[str, str]], ttl_s: float) -> None:
        ttl = ttl_ms(ttl_s)
        now = self._now()
        for user_id, session_id in items:
            self._alive(user_id, session_id, now, ttl)

    async def session_gone(self, user_id: str, session_id: str, grace_s: float) -> None:
        grace = ttl_ms(grace_s, allow_zero=True)
        now = self._now()
        user = self._touch(user_id, now)
        user.prune(now)
        # Only a live session gets a grace period: one that already expired
        # (its node stalled past the TTL) must not come back to life.
        if session_id in user.sessions:
            if grace > 0:
                user.expire_at(session_id, now + grace)
            else:
                del user.sessions[session_id]
        user.last_seen = max(user.last_seen, now)

    async def set_status(self, user_id: str, status: UserStatus) -> None:
        check_status(status)
        now = self._now()
        user = self._users.get(user_id)
        if status == "online" and (user is None or user.forget_at <= now):
            return  # nothing to undo; do not create an entry
        self._touch(user_id, now).away = status == "away"

    async def get(self, user_ids: Iterable[str]) -> dict[str, Presence]:
        now = self._now()
        result: dict[str, Presence] = {}
        for user_id in user_ids:
            user = self._users.get(user_id)
            if user is None or user.forget_at <= now:
                result[user_id] = OFFLINE_NEVER_SEEN
            elif user.prune(now) == 0:
                result[user_id] = Presence("offline", user.last_seen)
            else:
                result[user_id] = Presence("away" if user.away else "online", user.last_seen)
        return result

    # -- typing --------------------------------------------------------------

    async def set_typing(self, conversation_id: str, user_id: str, ttl_s: float) -> None:
        ttl = ttl_ms(ttl_s)
        now = self._now()
        self._typing.setdefault(conversation_id, {})[user_id] = now + ttl

    async def clear_typing(self, conversation_id: str, user_id: str) -> None:
        self._now()
        self._clear_typing(conversation_id, user_id)

    def _clear_typing(self, conversation_id: str, user_id: str) -> None:
        typists = self._typing.get(conversation_id)
        if typists is not None:
            typists.pop(user_id, None)
            if not typists:
                del self._typing[conversation_id]

    async def clear_typing_for(self, user_id: str, conversation_ids: Iterable[str]) -> None:
        self._now()
        for conversation_id in conversation_ids:
            self._clear_typing(conversation_id, user_id)

    async def typing_in(self, conversation_ids: Iterable[str]) -> list[Typing]:
        now = self._now()
        result: list[Typing] = []
        for conversation_id in dict.fromkeys(conversation_ids):
            typists = self._typing.get(conversation_id)
            if not typists:
                continue
            for user_id in sorted(typists):
                expires = typists[user_id]
                if expires > now:
                    result.append(Typing(conversation_id, user_id, expires, expires - now))
        return result

    # -- housekeeping --------------------------------------------------------

    def _sweep(self, now: int) -> None:
        """Forget what can no longer be observed (see the module doc)."""
        for user_id in [u for u, user in self._users.items() if user.forget_at <= now]:
            del self._users[user_id]
        for user in self._users.values():
            user.prune(now)
        for conversation_id in list(self._typing):
            typists = self._typing[conversation_id]
            for user_id in [u for u, expires in typists.items() if expires <= now]:
                del typists[user_id]
            if not typists:
                del self._typing[conversation_id]

    def stats(self) -> dict[str, int]:
        """Entries held (for tests of the sweep and for metrics)."""
        return {
            "users": len(self._users),
            "sessions": sum(len(u.sessions) for u in self._users.values()),
            "typing_conversations": len(self._typing),
        }
