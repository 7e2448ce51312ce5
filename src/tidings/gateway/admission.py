"""Admission control for WebSocket upgrades (FM7): who gets in now, and when to come back.

Four guards, checked before any WebSocket state exists, each answered with a
cheap 503 and a ``Retry-After``:

- draining (SIGTERM): come back after the drain window (elsewhere);
- ``max_connections``: the node is full (its open-file limit, by default);
- ``handshake_concurrency``: too many sessions still waiting for ``welcome``;
  this caps the queue, and so the latency of an admitted handshake;
- ``handshake_rate_per_s`` / ``handshake_burst``: a token bucket on the rate.

Why the ``Retry-After`` grows with the backlog: a fixed one sends a herd of
N refused clients back together a second later, to be refused again, and the
refusals themselves cost the node accept + parse + answer (about 80 µs each
here, against a few ms for a handshake). Measured with 50,000 clients
(docs/benchmarks.md), the node then spent most of the first twenty seconds
answering 503s and admitted a few dozen handshakes a second. So the answer
spreads the refused clients over a window of ``refused_per_s / capacity``
seconds, centred on it (uniform in ``[w/2, 3w/2]``): if they return
uniformly over that window, they arrive at about the rate this node can
welcome. The capacity is the largest of the welcomes of the last two
seconds, Little's law over the admitted queue (``handshake_concurrency`` /
the mean time from upgrade to welcome) and :data:`MIN_WELCOME_RATE`: at the
start of a herd the node has not welcomed much yet, and that alone would
send clients away for far longer than needed.

Erring long is worse than erring short. Too short, and a refused client comes
back early and is refused again: one more cheap 503. Too long, and it idles
while the node has room: measured at 50,000 clients, with a floor of 50
welcomes/s and waits of up to 2 x 60 s, the nodes sat half idle from the
sixth second on while the last clients waited out their Retry-After, and
all were back only after 121 s. Hence the floor of a realistic node's
rate, and a cap (:data:`MAX_RETRY_S`) that keeps every wait inside the
minute the clients' own backoff schedule implies.
"""

from __future__ import annotations

import math
import random
import resource
from collections import deque

from tidings.core.ratelimit import TokenBucket
from tidings.settings import Settings

# Retry-After floor when the node is merely busy: a queue of
# `handshake_concurrency` drains in well under a second on any machine.
BUSY_RETRY_S = 1.0
# ... when it is full: the retry may land on another node at once, or here
# once clients have left.
FULL_RETRY_S = 2.0
# The backlog-scaled wait is capped so that the longest (1.5 x this) stays
# inside the minute that the clients' own backoff schedule implies.
MAX_RETRY_S = 30.0
# The welcome rate assumed before any was measured (and its floor): a node
# welcomed 200-350 handshakes/s during the 50,000-client storm on the shared
# two cores (docs/benchmarks.md); any real server does at least this.
MIN_WELCOME_RATE = 200.0
# An upgrade that passed screen() counts against handshake_concurrency until
# its check(), or this long (its client may be gone before the request is read).
SCREENED_TTL_S = 1.0
# A node that stepped off a shared port for want of room comes back once it
# has room for this many sessions (or half its maximum, if that is smaller):
# the hysteresis keeps a node hovering at its limit from leaving and joining
# the port for every client that comes and goes.
REJOIN_ROOM = 64
# Weight of the newest handshake in the mean time from upgrade to welcome.
DURATION_WEIGHT = 0.05
# Open files kept free for the store's and bus's connections, logs and the
# listening socket when max_connections is derived from the open-file limit.
FD_HEADROOM = 1000

REASON_DRAINING = "draining"
REASON_FULL = "node full"
REASON_BUSY = "too many handshakes in progress"
REASON_RATE = "too many handshakes"


def default_max_connections() -> int:
    """The process's open-file limit less :data:`FD_HEADROOM` (at least 1)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1 << 30
    return max(1, soft - FD_HEADROOM)


class _PerSecond:
    """Events in the current and the previous whole second."""

    __slots__ = ("_before", "_now", "_second")

    def __init__(self) -> None:
        self._second = 0
        self._now = 0
        self._before = 0

    def _roll(self, now: float) -> None:
        second = int(now)
        if second != self._second:
            self._before = self._now if second == self._second + 1 else 0
            self._now = 0
            self._second = second

    def add(self, now: float) -> None:
        self._roll(now)
        self._now += 1

    def rate(self, now: float) -> float:
        """Events per second over the last one to two seconds."""
        self._roll(now)
        return (self._now + self._before) / (1.0 + (now - int(now)))


class Admission:
    """Decides upgrades; the gateway reports sessions that got their welcome."""

    def __init__(self, settings: Settings, now: float) -> None:
        self._settings = settings
        self._bucket = TokenBucket(settings.handshake_rate_per_s, settings.handshake_burst, now)
        self._max_connections = settings.max_connections or default_max_connections()
        self.handshaking = 0  # sessions upgraded and still waiting for welcome
        self._welcomed = _PerSecond()
        self._refused = _PerSecond()
        self._mean_duration_s: float | None = None
        self._screened: deque[float] = deque()  # when upgrades passed screen()

    def check(self, live: int, draining: bool, now: float) -> tuple[str, float] | None:
        """None to admit (counted in ``handshaking`` until :meth:`settled`), else
        the refusal's reason and its Retry-After in seconds (whole, at least 1)."""
        if self._screened:
            self._screened.popleft()  # (most likely) this upgrade's own pass
        refusal = self._guards(live, draining, now, pending=0)
        if refusal is not None:
            return refusal
        wait_ms = self._bucket.try_take(now)
        if wait_ms:
            return self._backlog_refusal(REASON_RATE, wait_ms / 1000, now)
        self.handshaking += 1
        return None

    def screen(self, live: int, draining: bool, now: float) -> tuple[str, float] | None:
        """Asked by the acceptor when an upgrade arrives, before any HTTP
        machinery runs (http/acceptor.py), so that a refusal costs a few µs
        instead of ~80: the guards that need no token (draining, full, busy),
        a refusal or None. An upgrade let through is counted as pending until
        its :meth:`check` (or for :data:`SCREENED_TTL_S`): a batch of
        connections accepted at once must not all pass one free slot."""
        while self._screened and now - self._screened[0] > SCREENED_TTL_S:
            self._screened.popleft()
        refusal = self._guards(live, draining, now, pending=len(self._screened))
        if refusal is None:
            self._screened.append(now)
        return refusal

    def _guards(
        self, live: int, draining: bool, now: float, pending: int
    ) -> tuple[str, float] | None:
        if draining:
            window_s = self._settings.drain_window_ms / 1000
            return self._refusal(REASON_DRAINING, window_s, window_s, now)
        if live >= self._max_connections:
            return self._backlog_refusal(REASON_FULL, FULL_RETRY_S, now)
        if self.handshaking + pending >= self._settings.handshake_concurrency:
            return self._backlog_refusal(REASON_BUSY, BUSY_RETRY_S, now)
        return None

    def room(self, live: int, draining: bool) -> int:
        """Sessions this node would still take: 0 while draining or full (a node
        sharing its port then steps off it, http/acceptor.py)."""
        return 0 if draining else max(0, self._max_connections - live)

    @property
    def rejoin_room(self) -> int:
        """The room at which a node that stepped off its shared port comes back."""
        return min(REJOIN_ROOM, max(1, self._max_connections // 2))

    def settled(self, now: float, welcomed_after_s: float | None) -> None:
        """An admitted session got its welcome `welcomed_after_s` after its
        upgrade, or (None) ended without one."""
        self.handshaking -= 1
        if welcomed_after_s is not None:
            self.welcomed(now, welcomed_after_s)

    def welcomed(self, now: float, duration_s: float) -> None:
        """Count a welcome given `duration_s` after its upgrade (the capacity estimate)."""
        self._welcomed.add(now)
        mean = self._mean_duration_s
        self._mean_duration_s = (
            duration_s if mean is None else mean + DURATION_WEIGHT * (duration_s - mean)
        )

    def capacity(self, now: float) -> float:
        """Welcomes per second this node can give, as far as it has shown."""
        rate = max(MIN_WELCOME_RATE, self._welcomed.rate(now))
        mean = self._mean_duration_s
        if mean is not None and mean > 0:
            rate = max(rate, self._settings.handshake_concurrency / mean)
        return rate

    def _backlog_refusal(self, reason: str, floor_s: float, now: float) -> tuple[str, float]:
        wait_s = min(MAX_RETRY_S, max(floor_s, self._refused.rate(now) / self.capacity(now)))
        return self._refusal(reason, wait_s / 2, wait_s, now)

    def _refusal(self, reason: str, low_s: float, spread_s: float, now: float) -> tuple[str, float]:
        """Retry-After uniform over [low, low + spread]: the refused come back spread out."""
        self._refused.add(now)
        seconds = max(1, math.ceil(low_s + random.uniform(0, spread_s)))
        return reason, float(seconds)
