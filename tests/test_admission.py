"""Admission control's decisions and its backlog-scaled Retry-After, with a
clock the test controls (the gateway passes time.monotonic())."""

from __future__ import annotations

from tidings.gateway.admission import (
    BUSY_RETRY_S,
    MAX_RETRY_S,
    MIN_WELCOME_RATE,
    REASON_BUSY,
    REASON_DRAINING,
    REASON_FULL,
    REASON_RATE,
    REJOIN_ROOM,
    Admission,
)
from tidings.settings import Settings

T0 = 1000.0


def admission(**overrides: object) -> Admission:
    base: dict[str, object] = {
        "handshake_rate_per_s": 1e9,
        "handshake_burst": 10**9,
        "max_connections": 100,
    }
    settings = Settings().replace(**(base | overrides))
    return Admission(settings, T0)


def test_guards_in_order_draining_full_busy_rate() -> None:
    a = admission(handshake_concurrency=2, drain_window_ms=10_000)
    assert a.check(live=0, draining=False, now=T0) is None
    refusal = a.check(live=0, draining=True, now=T0)
    assert refusal is not None
    assert refusal[0] == REASON_DRAINING
    assert 10 <= refusal[1] <= 20
    full = a.check(live=100, draining=False, now=T0)
    assert full is not None
    assert full[0] == REASON_FULL
    assert a.check(live=0, draining=False, now=T0) is None  # the second of 2 admitted
    busy = a.check(live=5, draining=False, now=T0)
    assert busy is not None
    assert busy[0] == REASON_BUSY
    limited = admission(handshake_rate_per_s=1.0, handshake_burst=1)
    assert limited.check(live=0, draining=False, now=T0) is None
    rate = limited.check(live=0, draining=False, now=T0)
    assert rate is not None
    assert rate[0] == REASON_RATE


def test_retry_after_spreads_a_herd_over_what_the_node_welcomes() -> None:
    a = admission(handshake_concurrency=0)  # every upgrade is refused as busy
    for i in range(400):  # a node that welcomed 400 in the last second...
        a.welcomed(T0 + i / 400, 1e9)  # slow: Little's law adds nothing here
    now = T0 + 1.0
    waits = []
    for i in range(4000):  # ...and is then asked by 4,000 at once
        refusal = a.check(live=0, draining=False, now=now + i / 10_000)
        assert refusal is not None
        waits.append(refusal[1])
    # The first refusals see no backlog yet: the floor.
    assert BUSY_RETRY_S <= waits[0] <= 2 * BUSY_RETRY_S
    # Late in the herd: ~4,000 refused / ~400 welcomed per second, about 10 s,
    # spread over [5, 15] s.
    late = waits[-200:]
    assert all(3 <= w <= 1.5 * MAX_RETRY_S + 1 for w in late)
    assert 7 < sum(late) / len(late) < 13


def test_retry_after_is_capped_and_assumes_a_minimum_welcome_rate() -> None:
    a = admission(handshake_concurrency=0)
    now = T0
    last = None
    for i in range(int(MIN_WELCOME_RATE * MAX_RETRY_S * 3)):
        last = a.check(live=0, draining=False, now=now + i / 100_000)
    assert last is not None
    assert MAX_RETRY_S / 2 <= last[1] <= 1.5 * MAX_RETRY_S + 1


def test_capacity_counts_the_admitted_queue_by_littles_law() -> None:
    a = admission(handshake_concurrency=256)
    assert a.capacity(T0) == MIN_WELCOME_RATE
    a.welcomed(T0, 0.05)  # 256 in flight, 50 ms each: 5,120 per second
    assert a.capacity(T0) == 256 / 0.05
    for _ in range(800):
        a.welcomed(T0, 0.5)
    assert a.capacity(T0) == 801 / 1.0  # the measured rate is higher than Little's law
    later = T0 + 10  # no welcomes in the last two seconds: Little's law alone
    assert 256 / 0.5 <= a.capacity(later) < 256 / 0.4


def test_a_settled_session_frees_its_slot() -> None:
    a = admission(handshake_concurrency=1)
    assert a.check(live=0, draining=False, now=T0) is None
    assert a.check(live=1, draining=False, now=T0) is not None
    a.settled(T0, None)  # left without a welcome
    assert a.check(live=0, draining=False, now=T0) is None
    a.settled(T0, 0.01)
    assert a.handshaking == 0


def test_room_is_zero_while_full_or_draining_and_rejoining_waits_for_hysteresis() -> None:
    a = admission(max_connections=1000)
    assert a.room(live=990, draining=False) == 10
    assert a.room(live=1000, draining=False) == 0
    assert a.room(live=1200, draining=False) == 0  # over a lowered limit
    assert a.room(live=0, draining=True) == 0
    assert a.rejoin_room == REJOIN_ROOM
    # A small node must still come back once it has room (half of its maximum).
    assert admission(max_connections=3).rejoin_room == 1
    assert admission(max_connections=10).rejoin_room == 5
