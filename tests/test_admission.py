"""Admission control's decisions and its backlog-scaled Retry-After, with a
clock the test controls (the gateway passes time.monotonic())."""

from __future__ import annotations

from collections import Counter

from tidings.gateway.admission import (
    BUSY_RETRY_S,
    MAX_RETRY_S,
    MIN_WELCOME_RATE,
    PROBE_FACTOR,
    REASON_BUSY,
    REASON_DRAINING,
    REASON_FULL,
    REASON_RATE,
    REJOIN_ROOM,
    Admission,
    max_connections_for,
)
from tidings.settings import Settings

T0 = 1000.0
# Returns booked per second by a node that has not welcomed anyone yet.
PER_SECOND = int(MIN_WELCOME_RATE * PROBE_FACTOR)


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
    a.admitted(T0)
    refusal = a.check(live=0, draining=True, now=T0)
    assert refusal is not None
    assert refusal[0] == REASON_DRAINING
    assert 10 <= refusal[1] <= 20
    full = a.check(live=100, draining=False, now=T0)
    assert full is not None
    assert full[0] == REASON_FULL
    assert a.check(live=0, draining=False, now=T0) is None  # the second of 2 admitted
    a.admitted(T0)
    busy = a.check(live=5, draining=False, now=T0)
    assert busy is not None
    assert busy[0] == REASON_BUSY
    limited = admission(handshake_rate_per_s=1.0, handshake_burst=1)
    assert limited.check(live=0, draining=False, now=T0) is None
    rate = limited.check(live=0, draining=False, now=T0)
    assert rate is not None
    assert rate[0] == REASON_RATE


def test_retry_after_books_returns_at_the_rate_the_node_welcomes() -> None:
    a = admission(handshake_concurrency=0)  # every upgrade is refused as busy
    for i in range(400):  # a node that welcomed 400 in the last second...
        a.welcomed(T0 + i / 400)
    now = T0 + 1.0
    waits: Counter[float] = Counter()
    for _ in range(4000):  # ...and is then asked by 4,000 at once
        refusal = a.check(live=0, draining=False, now=now)
        assert refusal is not None
        waits[refusal[1]] += 1
    # 600 (what it welcomes in a second, and a margin to find out whether it
    # can welcome more) told to come back after each of the next seconds.
    assert waits == {float(s): 600 for s in range(1, 7)} | {7.0: 400}


def test_a_later_refusal_is_booked_after_the_earlier_ones() -> None:
    a = admission(handshake_concurrency=0)
    first = [a.check(live=0, draining=False, now=T0) for _ in range(PER_SECOND * 3)]
    assert {r[1] for r in first if r is not None} == {1.0, 2.0, 3.0}
    # Half a second later the second-ahead slots are still taken: the next
    # refusal is told to come back once those have.
    later = a.check(live=0, draining=False, now=T0 + 0.5)
    assert later is not None
    assert later[1] == 4.0
    # Seconds that have passed are forgotten.
    assert a.check(live=0, draining=False, now=T0 + 10) == (REASON_BUSY, BUSY_RETRY_S)


def test_retry_after_is_capped_and_assumes_a_minimum_welcome_rate() -> None:
    a = admission(handshake_concurrency=0)
    last = None
    for _ in range(PER_SECOND * MAX_RETRY_S):
        last = a.check(live=0, draining=False, now=T0)
    assert last == (REASON_BUSY, float(MAX_RETRY_S))
    # Every second up to the cap is booked: the overflow is spread over its second half.
    for _ in range(100):
        over = a.check(live=0, draining=False, now=T0)
        assert over is not None
        assert MAX_RETRY_S // 2 <= over[1] <= MAX_RETRY_S


def test_the_rate_limit_caps_the_returns_booked_per_second() -> None:
    a = admission(handshake_concurrency=0, handshake_rate_per_s=10.0)
    waits = [a.check(live=0, draining=False, now=T0) for _ in range(30)]
    assert [w[1] for w in waits if w is not None] == [1.0] * 10 + [2.0] * 10 + [3.0] * 10


def test_capacity_is_the_welcome_rate_it_has_shown() -> None:
    a = admission()
    assert a.capacity(T0) == MIN_WELCOME_RATE
    for _ in range(800):
        a.welcomed(T0)
    assert a.capacity(T0) == 800
    assert a.capacity(T0 + 10) == MIN_WELCOME_RATE  # none in the last two seconds


def test_a_slot_is_held_from_the_upgrade_to_the_hello_and_from_the_hello_to_the_welcome() -> None:
    a = admission(handshake_concurrency=1)
    assert a.check(live=0, draining=False, now=T0) is None
    ticket = a.admitted(T0)
    assert a.check(live=1, draining=False, now=T0) is not None  # waiting for its hello
    a.hello(ticket)
    assert a.handshaking == 1
    assert a.check(live=1, draining=False, now=T0) is not None  # its hello is answered
    a.settled(T0, False)  # refused, or left without a welcome
    assert a.check(live=1, draining=False, now=T0) is None
    a.hello(a.admitted(T0))
    a.settled(T0, True)
    assert a.handshaking == 0
    assert a.check(live=2, draining=False, now=T0) is None


def test_a_session_that_leaves_before_its_hello_frees_its_slot() -> None:
    a = admission(handshake_concurrency=1)
    assert a.check(live=0, draining=False, now=T0) is None
    ticket = a.admitted(T0)
    assert a.check(live=1, draining=False, now=T0) is not None
    a.left(ticket)
    assert a.check(live=0, draining=False, now=T0) is None


def test_a_silent_upgrade_holds_its_slot_only_until_the_await_hello_limit() -> None:
    a = admission(handshake_concurrency=2, handshake_await_hello_ms=1000)
    assert a.check(live=0, draining=False, now=T0) is None
    silent = a.admitted(T0)
    assert a.check(live=1, draining=False, now=T0 + 0.5) is None
    a.admitted(T0 + 0.5)
    busy = a.check(live=2, draining=False, now=T0 + 0.9)
    assert busy is not None
    assert busy[0] == REASON_BUSY
    # A second after its upgrade, the silent one no longer keeps others out ...
    assert a.check(live=2, draining=False, now=T0 + 1.1) is None
    a.admitted(T0 + 1.1)
    assert a.check(live=3, draining=False, now=T0 + 1.2) is not None
    # ... and its late hello is counted (and answered) like any other.
    a.hello(silent)
    assert a.handshaking == 1
    assert a.check(live=3, draining=False, now=T0 + 1.6) is not None
    a.settled(T0 + 1.7, True)
    assert a.check(live=3, draining=False, now=T0 + 1.7) is None


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


def test_max_connections_keeps_descriptors_free_for_the_store_bus_and_logs() -> None:
    # These machines: 20,000 open files, of which 1,000 are kept free for the
    # store's and bus's connections and logs.
    assert max_connections_for(20_000) == 19_000
    # A laptop's default keeps a quarter free rather than leaving 24 sessions.
    assert max_connections_for(1024) == 768
    assert max_connections_for(1) == 1
