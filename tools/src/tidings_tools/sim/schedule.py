"""The reconnect backoff schedule as pure functions, and its closed-form bounds.

A copy of the schedule of the SDK's seedable ``tidings_client.backoff.Backoff``
(same formula and defaults); the simulator does not draw from ``Backoff``
itself. These functions take the uniform draw ``u`` as an argument instead of
holding a random generator, so that the simulator decides the draw order
(which keeps runs reproducible) and the bounds are easy to test. Drawing the
intervals from ``Backoff`` would make sure that what the tool shows is what
clients do; until then, a change to one schedule must be made to both.

The schedule, for interval ``k`` = 0, 1, 2, ...:

- nominal ``d_k = min(cap, base * factor**k)``;
- ``equal`` ("±50%") jitter: uniform in ``[0.5 d_k, 1.5 d_k]``;
- ``full`` jitter: uniform in ``[0, d_k]``;
- ``none``: exactly ``d_k``.

Note that AWS's "Equal Jitter" means ``[d/2, d]``; here ``equal`` is the
±50% jitter, centred on the nominal interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

Jitter = Literal["equal", "full", "none"]
JITTER_MODES: tuple[str, ...] = get_args(Jitter)

FirstAttempt = Literal["immediate", "after-interval"]
FIRST_ATTEMPT_MODES: tuple[str, ...] = get_args(FirstAttempt)

# The client SDK's defaults (tidings_client.backoff): base 1 s, factor 2,
# cap 60 s, ±50% jitter.
DEFAULT_BASE_S = 1.0
DEFAULT_FACTOR = 2.0
DEFAULT_CAP_S = 60.0
DEFAULT_JITTER: Jitter = "equal"


@dataclass(frozen=True)
class BackoffPolicy:
    """Parameters of the schedule; validated so the simulation always terminates."""

    base: float = DEFAULT_BASE_S
    factor: float = DEFAULT_FACTOR
    cap: float = DEFAULT_CAP_S
    jitter: Jitter = DEFAULT_JITTER

    def __post_init__(self) -> None:
        if not (self.base > 0 and math.isfinite(self.base)):
            raise ValueError(f"base must be a positive number of seconds, not {self.base}")
        if not (self.factor >= 1 and math.isfinite(self.factor)):
            raise ValueError(f"factor must be >= 1, not {self.factor}")
        if not (self.cap > 0 and math.isfinite(self.cap)):
            raise ValueError(f"cap must be a positive number of seconds, not {self.cap}")
        if self.jitter not in JITTER_MODES:
            raise ValueError(f"jitter must be one of {JITTER_MODES}, not {self.jitter!r}")


def nominal_delay(k: int, policy: BackoffPolicy) -> float:
    """``d_k = min(cap, base * factor**k)``, without overflowing for large ``k``."""
    try:
        return min(policy.cap, policy.base * policy.factor**k)
    except OverflowError:  # factor**k beyond a float: long past the cap
        return policy.cap


def jittered(nominal: float, jitter: Jitter, u: float) -> float:
    """One jittered interval from its nominal value and a uniform draw ``u`` in [0, 1)."""
    if jitter == "equal":
        return nominal * (0.5 + u)
    if jitter == "full":
        return nominal * u
    return nominal


def delay(k: int, policy: BackoffPolicy, u: float) -> float:
    """The ``k``-th interval of one client, given its uniform draw ``u`` for that interval."""
    return jittered(nominal_delay(k, policy), policy.jitter, u)


def jitter_bounds(jitter: Jitter) -> tuple[float, float]:
    """The interval's range as multiples of its nominal value."""
    if jitter == "equal":
        return (0.5, 1.5)
    if jitter == "full":
        return (0.0, 1.0)
    return (1.0, 1.0)


def after_intervals_bounds(k: int, policy: BackoffPolicy) -> tuple[float, float, float]:
    """(low, high, nominal) of the time after ``k`` intervals: the sum of the first ``k``.

    Each interval's jitter spans the same multiples of its nominal value, so the
    bounds of the sum are those multiples of the nominal sum.
    """
    nominal = math.fsum(nominal_delay(j, policy) for j in range(k))
    low, high = jitter_bounds(policy.jitter)
    return (low * nominal, high * nominal, nominal)


def expected_fraction_before(t: float, policy: BackoffPolicy, first: FirstAttempt) -> float:
    """Share of clients whose first attempt falls in ``[0, t)``: the formula for question (a)."""
    if first == "immediate":
        return 1.0 if t > 0 else 0.0
    d0 = nominal_delay(0, policy)
    low, high = (m * d0 for m in jitter_bounds(policy.jitter))
    if high == low:
        return 1.0 if low < t else 0.0
    return min(1.0, max(0.0, (t - low) / (high - low)))
