"""Token buckets for per-user and per-connection rate limits.

A bucket holds up to ``burst`` tokens and refills at ``rate`` per second. A
request that finds no token is refused with the time until one is there, which
the protocol passes on as ``retry_after_ms``: a well-behaved client waits that
long and resends the same frame, so it is slowed, never refused outright.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from tidings.core.errors import ErrorCode, TidingsError

# A keyed limiter forgets buckets that have refilled completely once it holds
# this many keys, so that memory follows active users, not every user ever seen.
MAX_IDLE_BUCKETS = 10_000


class TokenBucket:
    __slots__ = ("_burst", "_rate", "_stamp", "_tokens")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._stamp = now

    def _refill(self, now: float) -> None:
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now

    def try_take(self, now: float) -> int:
        """Take a token; return 0 on success, else the milliseconds until one is there."""
        self._refill(now)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0
        return max(1, int((1.0 - self._tokens) / self._rate * 1000) + 1)

    def is_full(self, now: float) -> bool:
        self._refill(now)
        return self._tokens >= self._burst


class KeyedRateLimiter:
    """One token bucket per key (a user id), created on first use."""

    def __init__(
        self,
        rate: float,
        burst: int,
        what: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rate = rate
        self._burst = burst
        self._what = what
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}

    def check(self, key: str) -> None:
        """Take a token for ``key`` or raise ``rate_limited`` with ``retry_after_ms``."""
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= MAX_IDLE_BUCKETS:
                self._forget_full(now)
            bucket = self._buckets[key] = TokenBucket(self._rate, self._burst, now)
        wait_ms = bucket.try_take(now)
        if wait_ms:
            raise TidingsError(
                ErrorCode.RATE_LIMITED,
                f"too many {self._what}; retry after {wait_ms} ms",
                retry_after_ms=wait_ms,
            )

    def _forget_full(self, now: float) -> None:
        for key in [k for k, b in self._buckets.items() if b.is_full(now)]:
            del self._buckets[key]
