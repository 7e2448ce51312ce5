"""Unit tests of the reconnect schedule and the durable outbox (no sockets)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tidings_client import (
    Backoff,
    Jitter,
    Outbox,
    OutboxStatus,
    cumulative_bounds,
    interval_bounds,
)
from tidings_client.backoff import nominal_interval

MODES: tuple[Jitter, ...] = ("equal", "full", "none")
# Draws per interval when checking bounds: enough to hit both ends' neighbourhoods.
DRAWS = 200


def test_nominal_schedule_doubles_to_the_cap() -> None:
    assert [nominal_interval(k) for k in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert nominal_interval(10_000) == 60  # no float overflow far past the cap


@pytest.mark.parametrize("jitter", MODES)
def test_every_draw_is_within_its_interval_bounds(jitter: Jitter) -> None:
    for k in range(10):
        low, high = interval_bounds(k, jitter=jitter)
        backoff = Backoff(jitter=jitter, rng=random.Random(k))
        for _ in range(DRAWS):
            backoff.attempt = k
            delay = backoff.next_delay()
            assert low <= delay <= high, (k, delay)


def test_bounds_of_each_mode() -> None:
    assert interval_bounds(0) == (0.5, 1.5)  # ±50% by default
    assert interval_bounds(3) == (4.0, 12.0)
    assert interval_bounds(9) == (30.0, 90.0)  # jitter applies after the cap
    assert interval_bounds(3, jitter="full") == (0.0, 8.0)
    assert interval_bounds(3, jitter="none") == (8.0, 8.0)
    assert interval_bounds(2, base=0.1, factor=3, cap=0.5, jitter="none") == (0.5, 0.5)
    with pytest.raises(ValueError, match="jitter"):
        interval_bounds(0, jitter="half")  # type: ignore[arg-type]


def test_cumulative_bounds_sum_the_intervals() -> None:
    assert cumulative_bounds(0) == (0.0, 0.0)
    assert cumulative_bounds(3, jitter="none") == (7.0, 7.0)  # 1 + 2 + 4
    assert cumulative_bounds(3) == (3.5, 10.5)


def test_draws_spread_over_the_interval() -> None:
    """Jitter must actually spread a herd: draws cover most of the range."""
    backoff = Backoff(rng=random.Random(1))
    draws = []
    for _ in range(DRAWS):
        backoff.reset()
        draws.append(backoff.next_delay())
    assert min(draws) < 0.6
    assert max(draws) > 1.4


def test_seeded_schedules_are_reproducible_and_reset_restarts() -> None:
    first = Backoff(rng=random.Random(42))
    second = Backoff(rng=random.Random(42))
    a = [first.next_delay() for _ in range(12)]
    b = [second.next_delay() for _ in range(12)]
    assert a == b
    assert first.attempt == 12
    first.reset()
    assert first.attempt == 0
    assert interval_bounds(0)[0] <= first.next_delay() <= interval_bounds(0)[1]


def test_cap_holds_for_no_jitter() -> None:
    backoff = Backoff(jitter="none")
    delays = [backoff.next_delay() for _ in range(20)]
    assert max(delays) == 60.0
    assert delays[:3] == [1.0, 2.0, 4.0]


def test_invalid_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="factor"):
        Backoff(factor=0.5)
    with pytest.raises(ValueError, match="ratio"):
        Backoff(ratio=2.0)


# -- outbox --------------------------------------------------------------------------


def test_outbox_persists_across_instances(tmp_path: Path) -> None:
    path = str(tmp_path / "outbox.db")
    outbox = Outbox(path)
    outbox.add("m1", "c1", {"text": "one"})
    outbox.add("m2", "c1", {"text": "two"})
    outbox.record_attempt("m1")
    outbox.close()

    reopened = Outbox(path)
    entries = reopened.entries()
    assert [e.client_msg_id for e in entries] == ["m1", "m2"]  # send order kept
    assert entries[0].attempts == 1
    assert entries[0].content == {"text": "one"}
    assert entries[0].status is OutboxStatus.PENDING
    assert reopened.remove("m1")
    assert not reopened.remove("m1")
    assert len(reopened) == 1
    reopened.close()


def test_outbox_status_transitions() -> None:
    outbox = Outbox(":memory:")
    outbox.add("m1", "c1", {"text": "x"})
    outbox.record_attempt("m1")
    outbox.record_deferral("m1")
    outbox.set_status("m1", OutboxStatus.FAILED, "attempts_exhausted", "no ack")
    entry = outbox.get("m1")
    assert entry is not None
    assert entry.status is OutboxStatus.FAILED
    assert entry.error_code == "attempts_exhausted"
    assert outbox.entries(OutboxStatus.PENDING) == []
    outbox.set_status("m1", OutboxStatus.PENDING)  # the app retries: fresh counters
    entry = outbox.get("m1")
    assert entry is not None
    assert (entry.status, entry.attempts, entry.deferrals) == (OutboxStatus.PENDING, 0, 0)
    # Adding a known id (the epoch resend) makes it pending again, keeping its place.
    outbox.set_status("m1", OutboxStatus.REJECTED, "not_member", "gone")
    outbox.add("m1", "c1", {"text": "x"})
    entry = outbox.get("m1")
    assert entry is not None
    assert entry.status is OutboxStatus.PENDING
    assert "m1" in outbox
