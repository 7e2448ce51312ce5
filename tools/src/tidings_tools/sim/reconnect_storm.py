"""Simulate when clients reconnect after a server restart (the thundering herd, FM7).

Why a simulator: the answers to "how many clients attempt in the first
second" and "what range after k intervals" follow from the backoff formula,
but the shape of the storm over time (and what a handshake limit does to it)
does not have a short closed form. The simulator shows both side by side, so
the formulas in docs/reliability.md are checked by a run anyone can repeat.

The model:

- At t = 0 the server restarts and every one of ``clients`` connections drops.
- Each client makes its first attempt at t = 0 (``immediate``) or after one
  jittered interval (``after-interval``); how many clients attempt in the
  first second depends on which, so it is an explicit option, not a hidden
  assumption.
- After a failed attempt a client waits its next jittered interval
  (:mod:`tidings_tools.sim.schedule`) and tries again, until it succeeds.
- Without ``accept_rate`` every attempt succeeds: the question is *when*
  clients attempt. With ``accept_rate`` = R the server admits at most R
  handshakes in each whole second [s, s+1) (a fixed-window limiter, answered
  with 503 + Retry-After in the real server) and the rest back off further;
  that is what admission control does to the storm.
- The "no backoff" comparison (the thundering herd): every client attempts
  at t = 0 and, if rejected, retries every ``base`` seconds without growth or
  jitter, i.e. in lock-step with all the others.

Runs are deterministic for a seed: the first six intervals of every client
are drawn up front in client order (so the same clients see the same
schedule with and without a limit), later ones in event order.
"""

from __future__ import annotations

import csv
import heapq
import math
import random
from dataclasses import dataclass, field, replace
from typing import TextIO

from tidings_tools.sim.schedule import (
    BackoffPolicy,
    FirstAttempt,
    after_intervals_bounds,
    delay,
    expected_fraction_before,
)

DEFAULT_CLIENTS = 50_000
DEFAULT_SEED = 1
DEFAULT_BUCKET_S = 1.0
# Intervals drawn up front per client, and reported as "range after k intervals".
RANGE_INTERVALS = 6
# The share of clients the "time until 99%" figure waits for.
NEARLY_ALL = 0.99
# Terminal histogram: at most this many rows (buckets are merged beyond), bar width.
HISTOGRAM_ROWS = 30
BAR_WIDTH = 50
CSV_COLUMNS = (
    "scenario",
    "t_start_s",
    "t_end_s",
    "attempts",
    "accepted",
    "rejected",
    "attempts_per_s",
    "connected_total",
)


@dataclass(frozen=True)
class StormConfig:
    """One simulation's inputs."""

    clients: int = DEFAULT_CLIENTS
    policy: BackoffPolicy = field(default_factory=BackoffPolicy)
    first_attempt: FirstAttempt = "after-interval"
    accept_rate: int | None = None
    seed: int = DEFAULT_SEED
    bucket_s: float = DEFAULT_BUCKET_S

    def __post_init__(self) -> None:
        if self.clients < 0:
            raise ValueError(f"clients must be >= 0, not {self.clients}")
        if self.accept_rate is not None and self.accept_rate < 1:
            raise ValueError(f"accept rate must be >= 1 handshake/s, not {self.accept_rate}")
        if not (self.bucket_s > 0 and math.isfinite(self.bucket_s)):
            raise ValueError(f"bucket must be a positive duration, not {self.bucket_s}")


@dataclass(frozen=True)
class IntervalRange:
    """Time after ``k`` intervals: the formula's bounds beside the simulated extremes."""

    k: int
    nominal: float
    formula_low: float
    formula_high: float
    simulated_low: float
    simulated_high: float


@dataclass(frozen=True)
class Bucket:
    """Attempts that fell in ``[start, end)`` seconds after the restart."""

    start: float
    end: float
    attempts: int
    accepted: int
    connected_total: int

    @property
    def rejected(self) -> int:
        """Attempts the admission limit turned away."""
        return self.attempts - self.accepted


@dataclass(frozen=True)
class StormResult:
    """What one run measured."""

    scenario: str
    config: StormConfig
    buckets: list[Bucket]
    first_second_clients: int
    first_second_attempts: int
    expected_first_second_clients: float
    total_attempts: int
    peak_second: int
    peak_attempts_per_s: int
    time_to_nearly_all: float | None
    time_to_all: float | None
    ranges: list[IntervalRange]
    # Per-client time after k intervals (k = 1..RANGE_INTERVALS), for tests;
    # empty when every client has the same schedule (no jitter).
    client_times: list[list[float]] = field(repr=False)


def no_backoff(config: StormConfig) -> StormConfig:
    """The thundering-herd counterpart: all at t = 0, lock-step retries every ``base`` s."""
    base = config.policy.base
    herd = BackoffPolicy(base=base, factor=1.0, cap=base, jitter="none")
    return replace(config, policy=herd, first_attempt="immediate")


def simulate(config: StormConfig, scenario: str = "backoff") -> StormResult:
    """Run one storm and collect attempts per bucket, coverage times and interval ranges."""
    policy = config.policy
    n = config.clients
    rng = random.Random(config.seed)
    k_max = RANGE_INTERVALS
    # After-interval clients have already waited interval 0 at their first attempt.
    skip = 0 if config.first_attempt == "immediate" else 1

    lows = [math.inf] * (k_max + 1)
    highs = [-math.inf] * (k_max + 1)
    client_times: list[list[float]] = []
    draws: list[float] = []
    # Heap items: (time, client or -1 for a group of identical clients,
    # index of the interval to wait after this attempt, clients in the item).
    heap: list[tuple[float, int, int, int]] = []
    first_second_clients = 0
    if policy.jitter == "none" or n == 0:
        # Every client has the same schedule: one item stands for all of them,
        # which keeps the lock-step herd fast however many waves it takes.
        times = [0.0]
        for j in range(k_max):
            times.append(times[-1] + delay(j, policy, 0.0))
        lows, highs = list(times), list(times)
        if n:
            heap.append((times[skip], -1, skip, n))
            first_second_clients = n if times[skip] < 1.0 else 0
    else:
        draws = [rng.random() for _ in range(n * k_max)]
        for client in range(n):
            row = draws[client * k_max : (client + 1) * k_max]
            t = 0.0
            times = [0.0]
            for j, u in enumerate(row):
                t += delay(j, policy, u)
                times.append(t)
                if t < lows[j + 1]:
                    lows[j + 1] = t
                if t > highs[j + 1]:
                    highs[j + 1] = t
            client_times.append(times[1:])
            heap.append((times[skip], client, skip, 1))
            if times[skip] < 1.0:
                first_second_clients += 1
        heapq.heapify(heap)

    attempts: dict[int, int] = {}
    accepted: dict[int, int] = {}
    per_second: dict[int, int] = {}
    rate = config.accept_rate
    bucket_s = config.bucket_s
    window, used = -1, 0
    connected = 0
    nearly_all = math.ceil(NEARLY_ALL * n)
    t_nearly_all: float | None = None
    t_all: float | None = None
    while heap:
        t, client, idx, count = heapq.heappop(heap)
        bucket = int(t / bucket_s)
        second = int(t)
        attempts[bucket] = attempts.get(bucket, 0) + count
        per_second[second] = per_second.get(second, 0) + count
        if rate is None:
            admitted = count
        else:
            if second != window:
                window, used = second, 0
            admitted = min(count, rate - used)
            used += admitted
        if admitted:
            accepted[bucket] = accepted.get(bucket, 0) + admitted
            connected += admitted
            if t_nearly_all is None and connected >= nearly_all:
                t_nearly_all = t
            if connected == n:
                t_all = t
        rejected = count - admitted
        if rejected:
            u = 0.0
            if client >= 0:
                u = draws[client * k_max + idx] if idx < k_max else rng.random()
            heapq.heappush(heap, (t + delay(idx, policy, u), client, idx + 1, rejected))

    buckets: list[Bucket] = []
    total = 0
    for b in range(max(attempts, default=-1) + 1):
        total += accepted.get(b, 0)
        buckets.append(
            Bucket(b * bucket_s, (b + 1) * bucket_s, attempts.get(b, 0), accepted.get(b, 0), total)
        )
    peak_second, peak = max(per_second.items(), key=lambda kv: (kv[1], -kv[0]), default=(0, 0))
    ranges = []
    for k in range(1, k_max + 1):
        low, high, nominal = after_intervals_bounds(k, policy)
        ranges.append(IntervalRange(k, nominal, low, high, lows[k], highs[k]))
    return StormResult(
        scenario=scenario,
        config=config,
        buckets=buckets,
        first_second_clients=first_second_clients,
        first_second_attempts=per_second.get(0, 0),
        expected_first_second_clients=n
        * expected_fraction_before(1.0, policy, config.first_attempt),
        total_attempts=sum(attempts.values()),
        peak_second=peak_second,
        peak_attempts_per_s=peak,
        time_to_nearly_all=t_nearly_all,
        time_to_all=t_all,
        ranges=ranges,
        client_times=client_times,
    )


def write_csv(results: list[StormResult], out: TextIO) -> None:
    """One row per bucket and scenario (long format), zero buckets included."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for result in results:
        width = result.config.bucket_s
        for b in result.buckets:
            writer.writerow(
                (
                    result.scenario,
                    _num(b.start),
                    _num(b.end),
                    b.attempts,
                    b.accepted,
                    b.rejected,
                    _num(b.attempts / width),
                    b.connected_total,
                )
            )


def _num(x: float) -> str:
    return f"{x:.6g}" if abs(x) < 1e6 else f"{x:.0f}"


def _seconds(x: float | None) -> str:
    return "never" if x is None else f"{x:.3f} s"


def histogram(result: StormResult) -> list[str]:
    """Attempts over time as text bars: ``#`` accepted, ``.`` turned away by the limit."""
    buckets = result.buckets
    if not buckets:
        return ["    (no attempts)"]
    per_row = math.ceil(len(buckets) / HISTOGRAM_ROWS)
    rows = []
    for i in range(0, len(buckets), per_row):
        group = buckets[i : i + per_row]
        rows.append(
            (
                group[0].start,
                group[-1].end,
                sum(b.attempts for b in group),
                sum(b.accepted for b in group),
            )
        )
    top = max(r[2] for r in rows) or 1
    lines = [
        f"    attempts per {rows[0][1] - rows[0][0]:g} s"
        + (" (# accepted, . rejected)" if result.config.accept_rate else "")
    ]
    for start, end, att, acc in rows:
        full = max(1, round(att / top * BAR_WIDTH)) if att else 0
        ok = min(full, round(acc / top * BAR_WIDTH))
        if acc and not ok:
            ok = 1
        bar = "#" * ok + "." * (full - ok)
        lines.append(f"    {start:7.1f} - {end:7.1f} s |{bar:<{BAR_WIDTH}}| {att:,}")
    return lines


def describe(config: StormConfig) -> str:
    """The run's parameters in words, so a pasted output says what it assumed."""
    p = config.policy
    jitter = {
        "equal": "equal (±50%) jitter, uniform in [0.5 d, 1.5 d]",
        "full": "full jitter, uniform in [0, d]",
        "none": "no jitter",
    }[p.jitter]
    first = (
        "first attempt at t = 0"
        if config.first_attempt == "immediate"
        else "first attempt after one interval"
    )
    limit = (
        "every handshake accepted"
        if config.accept_rate is None
        else f"server admits at most {config.accept_rate:,} handshakes/s"
    )
    return (
        f"{config.clients:,} clients; backoff d_k = min({p.cap:g}, {p.base:g} * {p.factor:g}^k) s, "
        f"{jitter}; {first}; {limit}; seed {config.seed}"
    )


def report(result: StormResult, herd: StormResult) -> str:
    """The human summary: backoff run, its interval ranges, and the no-backoff herd."""
    n = result.config.clients

    def pct(x: float) -> str:
        return f"{100 * x / n:.1f}%" if n else "-"

    lines = [
        "tidings sim reconnect-storm",
        "  " + describe(result.config),
        "",
        "With backoff:",
        *histogram(result),
        f"  clients attempting in the first second [0, 1) s: {result.first_second_clients:,}"
        f" ({pct(result.first_second_clients)});"
        f" formula {result.expected_first_second_clients:,.0f}"
        f" ({pct(result.expected_first_second_clients)})",
        f"  attempts in the first second: {result.first_second_attempts:,};"
        f" peak {result.peak_attempts_per_s:,} attempts/s in [{result.peak_second},"
        f" {result.peak_second + 1}) s; {result.total_attempts:,} attempts in all",
        f"  connected: {NEARLY_ALL:.0%} after {_seconds(result.time_to_nearly_all)},"
        f" 100% after {_seconds(result.time_to_all)}",
        "  time after k backoff intervals (sum of k jittered intervals):",
        "     k   nominal   formula range          simulated range",
    ]
    for r in result.ranges:
        lines.append(
            f"    {r.k:2d}  {r.nominal:7.1f} s  [{r.formula_low:7.2f}, {r.formula_high:7.2f}] s"
            f"   [{r.simulated_low:7.3f}, {r.simulated_high:7.3f}] s"
        )
    lines += [
        "",
        "No backoff (thundering herd, FM7): all at t = 0, rejected clients retry every"
        f" {herd.config.policy.base:g} s in lock-step:",
        *histogram(herd),
        f"  clients attempting in the first second: {herd.first_second_clients:,}"
        f" ({pct(herd.first_second_clients)}), all at t = 0.000 s;"
        f" peak {herd.peak_attempts_per_s:,} attempts/s; {herd.total_attempts:,} attempts in all",
        f"  connected: {NEARLY_ALL:.0%} after {_seconds(herd.time_to_nearly_all)},"
        f" 100% after {_seconds(herd.time_to_all)}",
    ]
    return "\n".join(lines)
