"""The reconnect schedule: exponential backoff with jitter, as a pure object.

Nothing here sleeps, reads a clock or touches the network, so the same object
drives the SDK's reconnect loop, the unit tests and ``tidings sim
reconnect-storm`` (which draws millions of delays from seeded instances).

The schedule
------------

Interval ``k`` (``k = 0`` is the wait before the first reconnect attempt after
a drop) has the *nominal* length::

    d(k) = min(cap, base * factor ** k)

and the drawn delay is spread around it by the jitter mode:

``"equal"`` (the default, "±50%")
    uniform in ``[d(k) * (1 - ratio), d(k) * (1 + ratio)]`` with ``ratio = 0.5``.
    The mean stays ``d(k)``. Note that this is a *symmetric* spread, not the
    "equal jitter" of the AWS article (which is ``[d/2, d]``).
``"full"``
    uniform in ``[0, d(k)]`` ("full jitter"): the widest spread, mean ``d(k)/2``.
``"none"``
    exactly ``d(k)``; only for tests and for the simulator's "no jitter" case.

The cap bounds the nominal interval and the jitter is applied *after* the cap.
Clamping after jitter would put every capped client on exactly ``cap``
seconds, re-synchronising the herd that jitter exists to break up; so with the
defaults the longest single wait is ``60 * 1.5 = 90`` s.
:func:`interval_bounds` gives the exact ``[min, max]`` of interval ``k`` and
:func:`cumulative_bounds` the range of the time after ``k`` intervals.

Example::

    backoff = Backoff(rng=random.Random(7))     # seeded: reproducible delays
    delay = backoff.next_delay()                # interval 0: in [0.5, 1.5]
    delay = backoff.next_delay()                # interval 1: in [1.0, 3.0]
    backoff.reset()                             # after a stable connection
"""

from __future__ import annotations

import random
from typing import Literal

Jitter = Literal["equal", "full", "none"]

JITTER_MODES: tuple[Jitter, ...] = ("equal", "full", "none")

# The SDK's reconnect defaults. 1 s: a dropped mobile link usually comes back within a
# second or two, so the first retry should be quick.
DEFAULT_BASE_S = 1.0
# Doubling reaches the cap in six steps (1, 2, 4, 8, 16, 32, 60).
DEFAULT_FACTOR = 2.0
# One minute: long enough that a fleet of clients cannot hammer a recovering
# server, short enough that a user back in coverage is online within ~a minute.
DEFAULT_CAP_S = 60.0
# "±50%": wide enough to spread a herd of simultaneous drops over a whole
# interval, narrow enough that the mean schedule is still the nominal one.
DEFAULT_JITTER_RATIO = 0.5


def nominal_interval(
    k: int,
    *,
    base: float = DEFAULT_BASE_S,
    factor: float = DEFAULT_FACTOR,
    cap: float = DEFAULT_CAP_S,
) -> float:
    """``min(cap, base * factor**k)``: interval ``k`` before jitter."""
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    # Compare in log space first: base * factor**k overflows a float for large k.
    if factor > 1.0 and k > 0 and base > 0:
        steps_to_cap = 0
        value = base
        while value < cap and steps_to_cap < k:
            value *= factor
            steps_to_cap += 1
        return min(cap, value)
    return min(cap, base * factor**k)


def interval_bounds(
    k: int,
    *,
    base: float = DEFAULT_BASE_S,
    factor: float = DEFAULT_FACTOR,
    cap: float = DEFAULT_CAP_S,
    jitter: Jitter = "equal",
    ratio: float = DEFAULT_JITTER_RATIO,
) -> tuple[float, float]:
    """The ``[min, max]`` a delay drawn for interval ``k`` (0-based) can take.

    This is the contract :meth:`Backoff.next_delay` keeps, stated as a pure
    function so that tests and the simulator can check draws against it.
    """
    d = nominal_interval(k, base=base, factor=factor, cap=cap)
    if jitter == "equal":
        return d * (1.0 - ratio), d * (1.0 + ratio)
    if jitter == "full":
        return 0.0, d
    if jitter == "none":
        return d, d
    raise ValueError(f"jitter must be one of {JITTER_MODES}, got {jitter!r}")


def cumulative_bounds(
    k: int,
    *,
    base: float = DEFAULT_BASE_S,
    factor: float = DEFAULT_FACTOR,
    cap: float = DEFAULT_CAP_S,
    jitter: Jitter = "equal",
    ratio: float = DEFAULT_JITTER_RATIO,
) -> tuple[float, float]:
    """The ``[min, max]`` of the time elapsed after ``k`` intervals (0, 1, ... k-1).

    ``cumulative_bounds(0)`` is ``(0, 0)``. This answers "when, at the earliest
    and at the latest, does a client make its k-th attempt" if the first
    attempt waits one interval (the SDK's rule after a drop).
    """
    low = high = 0.0
    for i in range(k):
        lo, hi = interval_bounds(i, base=base, factor=factor, cap=cap, jitter=jitter, ratio=ratio)
        low += lo
        high += hi
    return low, high


class Backoff:
    """A seedable exponential backoff schedule; see the module docstring.

    ``attempt`` is the index of the next interval :meth:`next_delay` draws.
    Pass ``rng=random.Random(seed)`` for reproducible delays.
    """

    def __init__(
        self,
        base: float = DEFAULT_BASE_S,
        factor: float = DEFAULT_FACTOR,
        cap: float = DEFAULT_CAP_S,
        jitter: Jitter = "equal",
        rng: random.Random | None = None,
        *,
        ratio: float = DEFAULT_JITTER_RATIO,
    ) -> None:
        if base < 0 or cap < 0:
            raise ValueError("base and cap must be >= 0")
        if factor < 1.0:
            raise ValueError(f"factor must be >= 1, got {factor}")
        if jitter not in JITTER_MODES:
            raise ValueError(f"jitter must be one of {JITTER_MODES}, got {jitter!r}")
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"ratio must be in [0, 1], got {ratio}")
        self.base = base
        self.factor = factor
        self.cap = cap
        self.jitter: Jitter = jitter
        self.ratio = ratio
        self.rng = rng if rng is not None else random.Random()
        self.attempt = 0

    def bounds(self, k: int | None = None) -> tuple[float, float]:
        """:func:`interval_bounds` of interval ``k`` (default: the next one) for this schedule."""
        return interval_bounds(
            self.attempt if k is None else k,
            base=self.base,
            factor=self.factor,
            cap=self.cap,
            jitter=self.jitter,
            ratio=self.ratio,
        )

    def peek_nominal(self) -> float:
        """The next interval's nominal length (no draw, no state change)."""
        return nominal_interval(self.attempt, base=self.base, factor=self.factor, cap=self.cap)

    def next_delay(self) -> float:
        """Draw the next interval's delay in seconds and advance the schedule."""
        low, high = self.bounds()
        self.attempt += 1
        if low == high:
            return low
        return self.rng.uniform(low, high)

    def reset(self) -> None:
        """Start again from interval 0 (after a connection proved stable)."""
        self.attempt = 0
