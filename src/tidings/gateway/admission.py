"""Admission control for WebSocket upgrades (FM7): who gets in now, and when to come back.

Four guards, checked before any WebSocket state exists, each answered with a
cheap 503 and a ``Retry-After``:

- draining (SIGTERM): come back after the drain window (elsewhere);
- ``max_connections``: the node is full (its open-file limit, by default);
- ``handshake_concurrency``: too many handshakes in progress: each ``hello``
  not yet answered, and upgrades still waiting for theirs (for at most
  ``handshake_await_hello_ms``); this caps the queue, and so the latency of an
  admitted handshake;
- ``handshake_rate_per_s`` / ``handshake_burst``: a token bucket on the rate.

Why the ``Retry-After`` comes from a calendar: a fixed one sends a herd of
N refused clients back together a second later, to be refused again, and the
refusals cost the node accept + parse + answer (little when screened at
accept, but not nothing) and the client a whole TCP connection. So the node books each
refused client a return: the first whole second ahead (at least the
guard's floor) for which fewer than ``PROBE_FACTOR`` x the node's welcome
rate have been told to come back, at most :data:`MAX_RETRY_S` ahead (past
that, a second drawn from the calendar's second half). A herd of N is then
told to come back at about the rate the node welcomes, each client refused
about once, all within N / rate seconds. The welcome rate is the node's
welcomes over the last one to two seconds, at least :data:`MIN_WELCOME_RATE`
(at the start of a herd it has not welcomed anyone yet), and never more
than ``handshake_rate_per_s``.

The answer it replaced, a window of ``refused_per_s / capacity`` seconds
with no memory of whom it had sent where, refused each client of a large herd
several times over, so that the clients' retries, not the node's welcomes,
took most of the CPU and most clients were still out after a minute; with the
calendar each is refused about once (figures: docs/benchmarks.md, "Restart
storm on a slow machine").

Why an upgrade waiting for its ``hello`` holds a slot for at most
``handshake_await_hello_ms`` (1 s), not until its ``welcome``: the slot is
there to bound the node's own work, and between the 101 and the ``hello``
the node does none; the client does. Held until the ``welcome``, a few dozen
clients that upgrade and say nothing keep every other client out of the node
for the whole ``hello_timeout_ms`` (docs/benchmarks.md, same section). A
client slower than that still gets in: its ``hello`` takes a slot when it
arrives; the token bucket bounds how many upgrades there are to wait for.
"""

from __future__ import annotations

import math
import random
import resource
from collections import OrderedDict, deque

from tidings.core.ratelimit import TokenBucket
from tidings.settings import Settings

# Retry-After floor when the node is merely busy: a queue of
# `handshake_concurrency` drains in well under a second on any machine.
BUSY_RETRY_S = 1.0
# ... when it is full: the retry may land on another node at once, or here
# once clients have left.
FULL_RETRY_S = 2.0
# The calendar of returns reaches this far: the longest Retry-After stays
# inside the minute that the clients' own backoff schedule implies (erring
# long is worse than erring short: a client told to wait too long idles while
# the node has room; with waits of up to 2 x 60 s the last clients of a
# 50,000-client storm idled long after the nodes had room: docs/benchmarks.md,
# "Scale targets, re-measured 2026-12-01 22:35-23:20 UTC").
MAX_RETRY_S = 45
# The welcome rate assumed before any was measured (and its floor): what a
# node welcomed in a 50,000-client storm on a slow day of the shared two
# cores, so that no real server is told to wait longer than it needs
# (docs/benchmarks.md, "Restart storm on a slow machine").
MIN_WELCOME_RATE = 100.0
# Returns booked per second, over what the node has shown it welcomes: with
# exactly that, the node would never be offered more and never show more
# (it welcomed exactly what it had booked while the rest of the herd waited
# out the seconds booked for it: docs/benchmarks.md, "Restart storm on a slow
# machine", run "calendar, no margin"). With a
# margin, a node with room welcomes more each second until it has none, and
# then about a third of the returns are refused and booked again.
PROBE_FACTOR = 1.5
# An upgrade that passed screen() counts against handshake_concurrency until
# its check(), or this long (its client may be gone before the request is read).
SCREENED_TTL_S = 1.0
# A node that stepped off a shared port for want of room comes back once it
# has room for this many sessions (or half its maximum, if that is smaller):
# the hysteresis keeps a node hovering at its limit from leaving and joining
# the port for every client that comes and goes.
REJOIN_ROOM = 64
# Open files kept free for the store's and bus's connections, logs and the
# listening socket when max_connections is derived from the open-file limit.
FD_HEADROOM = 1000

REASON_DRAINING = "draining"
REASON_FULL = "node full"
REASON_BUSY = "too many handshakes in progress"
REASON_RATE = "too many handshakes"


def default_max_connections() -> int:
    """:func:`max_connections_for` the process's open-file limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1 << 30
    return max_connections_for(soft)


def max_connections_for(open_files: int) -> int:
    """Sessions a node holds at most under a limit of `open_files`: that less
    :data:`FD_HEADROOM`, or less a quarter of it if that is smaller (a
    laptop's default of 1,024 would otherwise leave 24 sessions)."""
    return max(1, open_files - min(FD_HEADROOM, open_files // 4))


class _Returns:
    """The refused clients told to come back, counted per whole second ahead."""

    __slots__ = ("_booked",)

    def __init__(self) -> None:
        self._booked: dict[int, int] = {}

    def book(self, now: float, floor_s: float, per_second: float) -> int:
        """The first whole number of seconds, at least `floor_s`, after which
        fewer than `per_second` others were told to return; when every second
        up to :data:`MAX_RETRY_S` is taken, one drawn from its second half."""
        base = int(now)
        booked = self._booked
        for second in [s for s in booked if s <= base]:
            del booked[second]
        for wait in range(max(1, math.ceil(floor_s)), MAX_RETRY_S + 1):
            if booked.get(base + wait, 0) < per_second:
                break
        else:
            wait = random.randint(MAX_RETRY_S // 2, MAX_RETRY_S)
        booked[base + wait] = booked.get(base + wait, 0) + 1
        return wait


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
        self.handshaking = 0  # hellos received and not yet answered
        self._welcomed = _PerSecond()
        self._returns = _Returns()
        self._screened: deque[float] = deque()  # when upgrades passed screen()
        # Admitted upgrades still waiting for their hello: ticket -> when admitted.
        self._awaiting: OrderedDict[int, float] = OrderedDict()
        self._await_hello_s = settings.handshake_await_hello_ms / 1000
        self._tickets = 0

    def check(self, live: int, draining: bool, now: float) -> tuple[str, float] | None:
        """None to admit (the caller then takes a ticket, :meth:`admitted`),
        else the refusal's reason and its Retry-After in seconds (whole, at
        least 1)."""
        if self._screened:
            self._screened.popleft()  # (most likely) this upgrade's own pass
        refusal = self._guards(live, draining, now, pending=0)
        if refusal is not None:
            return refusal
        wait_ms = self._bucket.try_take(now)
        if wait_ms:
            return self._backlog_refusal(REASON_RATE, wait_ms / 1000, now)
        return None

    def admitted(self, now: float) -> int:
        """An upgrade that :meth:`check` let in: it holds a slot until
        :meth:`hello` or :meth:`left` with the returned ticket, or for
        ``handshake_await_hello_ms``, whichever comes first."""
        self._tickets += 1
        self._awaiting[self._tickets] = now
        return self._tickets

    def hello(self, ticket: int) -> None:
        """The ``hello`` of `ticket` arrived: its slot is held until :meth:`settled`."""
        self._awaiting.pop(ticket, None)
        self.handshaking += 1

    def left(self, ticket: int) -> None:
        """The session of `ticket` ended (or its upgrade failed) before its hello."""
        self._awaiting.pop(ticket, None)

    def screen(self, live: int, draining: bool, now: float) -> tuple[str, float] | None:
        """Asked by the acceptor when an upgrade arrives, before any HTTP
        machinery runs (http/acceptor.py), so that a refusal costs a fraction
        of a request's cost (docs/benchmarks.md): the guards that need no
        token (draining, full, busy), a refusal or None. An upgrade let
        through is counted as pending until its :meth:`check` (or for
        :data:`SCREENED_TTL_S`): a batch of connections accepted at once must
        not all pass one free slot."""
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
            return self._refusal(REASON_DRAINING, window_s, window_s)
        if live >= self._max_connections:
            return self._backlog_refusal(REASON_FULL, FULL_RETRY_S, now)
        awaiting = self._awaiting
        while awaiting and now - next(iter(awaiting.values())) > self._await_hello_s:
            awaiting.popitem(last=False)
        waiting = len(awaiting) + pending
        if self.handshaking + waiting >= self._settings.handshake_concurrency:
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

    def settled(self, now: float, welcomed: bool) -> None:
        """A session whose :meth:`hello` was counted got its welcome, or was
        refused or ended without one."""
        self.handshaking -= 1
        if welcomed:
            self.welcomed(now)

    def welcomed(self, now: float) -> None:
        """Count a welcome (the capacity estimate)."""
        self._welcomed.add(now)

    def capacity(self, now: float) -> float:
        """Welcomes per second this node can give, as far as it has shown."""
        return max(MIN_WELCOME_RATE, self._welcomed.rate(now))

    def _backlog_refusal(self, reason: str, floor_s: float, now: float) -> tuple[str, float]:
        """Retry-After: the first second (at least `floor_s` ahead) for which
        fewer clients were told to return than the node welcomes in one."""
        per_second = min(PROBE_FACTOR * self.capacity(now), self._settings.handshake_rate_per_s)
        return reason, float(self._returns.book(now, floor_s, per_second))

    def _refusal(self, reason: str, low_s: float, spread_s: float) -> tuple[str, float]:
        """Retry-After uniform over [low, low + spread]: the refused come back spread out."""
        seconds = max(1, math.ceil(low_s + random.uniform(0, spread_s)))
        return reason, float(seconds)
