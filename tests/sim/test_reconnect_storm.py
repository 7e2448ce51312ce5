"""The reconnect-storm simulator agrees with the backoff formulas it illustrates.

Why these tests: docs/reliability.md quotes the simulator's figures beside
closed-form answers to the seed question; if the two ever disagree, one of
them is wrong and the document misleads. Sizes are small except where the
figure is a statistical share (the first-second count uses the real 50,000).
"""

from __future__ import annotations

import csv
import io
import math
import subprocess
import sys
from pathlib import Path

import pytest

from tidings_tools.sim.command import main
from tidings_tools.sim.reconnect_storm import (
    CSV_COLUMNS,
    RANGE_INTERVALS,
    StormConfig,
    no_backoff,
    simulate,
    write_csv,
)
from tidings_tools.sim.schedule import (
    BackoffPolicy,
    FirstAttempt,
    Jitter,
    after_intervals_bounds,
    delay,
    expected_fraction_before,
    jitter_bounds,
    nominal_delay,
)

# Float sums of jittered intervals may land a rounding error outside the bound.
EPS = 1e-9
# Hard bound on the CLI subprocess (it takes well under a second).
CLI_TIMEOUT_S = 30.0
SEED_CLIENTS = 50_000


def test_nominal_schedule_doubles_then_caps() -> None:
    policy = BackoffPolicy()
    assert [nominal_delay(k, policy) for k in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert nominal_delay(100_000, policy) == 60  # no OverflowError far past the cap


@pytest.mark.parametrize(
    ("jitter", "low", "high"), [("equal", 0.5, 1.5), ("full", 0.0, 1.0), ("none", 1.0, 1.0)]
)
def test_jitter_modes_span_their_range(jitter: Jitter, low: float, high: float) -> None:
    policy = BackoffPolicy(jitter=jitter)
    assert jitter_bounds(jitter) == (low, high)
    assert delay(2, policy, 0.0) == pytest.approx(4 * low)
    assert delay(2, policy, 1.0 - 1e-12) == pytest.approx(4 * high)


def test_three_intervals_range_is_3_5_to_10_5_seconds() -> None:
    """Seed question (b): 0.5+1+2 = 3.5 s to 1.5+3+6 = 10.5 s, nominal 7 s."""
    assert after_intervals_bounds(3, BackoffPolicy()) == (3.5, 10.5, 7.0)


def test_invalid_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="factor"):
        BackoffPolicy(factor=0.5)
    with pytest.raises(ValueError, match="accept rate"):
        StormConfig(accept_rate=0)


@pytest.mark.parametrize("jitter", ["equal", "full"])
@pytest.mark.parametrize("first", ["immediate", "after-interval"])
def test_every_client_stays_within_the_interval_bounds(jitter: Jitter, first: FirstAttempt) -> None:
    policy = BackoffPolicy(jitter=jitter)
    config = StormConfig(clients=5000, policy=policy, first_attempt=first)
    result = simulate(config)
    assert len(result.client_times) == 5000
    low_m, high_m = jitter_bounds(jitter)
    for times in result.client_times:
        previous = 0.0
        for k, t in enumerate(times):
            d = nominal_delay(k, policy)
            assert low_m * d - EPS <= t - previous <= high_m * d + EPS
            previous = t
    for r in result.ranges:
        assert r.formula_low - EPS <= r.simulated_low <= r.simulated_high <= r.formula_high + EPS
        # 5,000 draws come close to both ends of the first interval's range.
        if r.k == 1:
            assert r.simulated_high - r.simulated_low > 0.99 * (r.formula_high - r.formula_low)
    assert [r.k for r in result.ranges] == list(range(1, RANGE_INTERVALS + 1))


@pytest.mark.parametrize(
    ("jitter", "first", "expected"),
    [
        ("equal", "after-interval", 0.5),
        ("equal", "immediate", 1.0),
        ("full", "after-interval", 1.0),
        ("none", "after-interval", 0.0),  # everyone at exactly t = 1 s, outside [0, 1)
    ],
)
def test_first_second_count_matches_the_formula(
    jitter: Jitter, first: FirstAttempt, expected: float
) -> None:
    """Seed question (a) with the real 50,000 clients and a fixed seed."""
    policy = BackoffPolicy(jitter=jitter)
    config = StormConfig(clients=SEED_CLIENTS, policy=policy, first_attempt=first)
    assert expected_fraction_before(1.0, policy, config.first_attempt) == expected
    result = simulate(config)
    assert result.expected_first_second_clients == SEED_CLIENTS * expected
    assert abs(result.first_second_clients - SEED_CLIENTS * expected) <= 0.02 * SEED_CLIENTS
    assert result.total_attempts == SEED_CLIENTS  # nobody is turned away without a limit


def test_after_interval_equal_jitter_connects_everyone_by_one_and_a_half_seconds() -> None:
    result = simulate(StormConfig(clients=20_000))
    assert result.time_to_all is not None
    assert result.time_to_nearly_all is not None
    assert 1.45 < result.time_to_all < 1.5
    assert result.time_to_nearly_all == pytest.approx(0.5 + 0.99, abs=0.01)


def test_no_backoff_puts_every_client_in_the_first_bucket() -> None:
    """Seed question (c): the thundering herd, every attempt at the same instant."""
    herd = simulate(no_backoff(StormConfig(clients=SEED_CLIENTS, bucket_s=0.001)), "no-backoff")
    assert len(herd.buckets) == 1
    assert herd.buckets[0].attempts == SEED_CLIENTS
    assert herd.first_second_clients == SEED_CLIENTS
    assert herd.time_to_all == 0.0


@pytest.mark.parametrize("first", ["immediate", "after-interval"])
def test_accept_rate_limits_admitted_handshakes_per_second(first: FirstAttempt) -> None:
    rate, n = 500, 5000
    config = StormConfig(clients=n, accept_rate=rate, first_attempt=first)
    result = simulate(config)
    assert all(b.accepted <= rate for b in result.buckets)  # 1-second buckets = the window
    assert sum(b.accepted for b in result.buckets) == n
    assert result.buckets[-1].connected_total == n
    assert result.total_attempts > n  # some were turned away and came back
    assert result.time_to_all is not None
    assert result.time_to_all >= n / rate - 1  # cannot beat the limit
    unlimited = simulate(StormConfig(clients=n, first_attempt=first))
    assert unlimited.time_to_all is not None
    assert result.time_to_all > unlimited.time_to_all


def test_lock_step_herd_under_a_limit_comes_in_waves() -> None:
    rate, n = 500, 5000
    herd = simulate(no_backoff(StormConfig(clients=n, accept_rate=rate)), "no-backoff")
    assert [b.attempts for b in herd.buckets] == [n - rate * i for i in range(n // rate)]
    assert herd.time_to_all == n // rate - 1
    assert herd.total_attempts == sum(n - rate * i for i in range(n // rate))


def test_same_seed_same_storm_other_seed_other_storm() -> None:
    config = StormConfig(clients=3000, accept_rate=300, bucket_s=0.1)
    assert simulate(config).buckets == simulate(config).buckets
    other = StormConfig(clients=3000, accept_rate=300, bucket_s=0.1, seed=2)
    assert simulate(other).buckets != simulate(config).buckets


def test_csv_has_one_row_per_bucket_and_scenario() -> None:
    config = StormConfig(clients=2000, accept_rate=400, bucket_s=0.5)
    result, herd = simulate(config), simulate(no_backoff(config), "no-backoff")
    out = io.StringIO()
    write_csv([result, herd], out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert tuple(rows[0]) == CSV_COLUMNS
    for scenario, run in (("backoff", result), ("no-backoff", herd)):
        own = [r for r in rows if r["scenario"] == scenario]
        assert len(own) == len(run.buckets)
        assert sum(int(r["attempts"]) for r in own) == run.total_attempts
        assert int(own[-1]["connected_total"]) == 2000
        for r in own:
            assert int(r["attempts"]) == int(r["accepted"]) + int(r["rejected"])
            assert float(r["attempts_per_s"]) == pytest.approx(int(r["attempts"]) / 0.5)
            assert math.isclose(float(r["t_end_s"]) - float(r["t_start_s"]), 0.5)


def test_cli_writes_csv_to_stdout_and_summary_to_stderr() -> None:
    command = [sys.executable, "-m", "tidings_tools.sim", "reconnect-storm", "--clients", "2000"]
    done = subprocess.run(
        [*command, "--csv", "-"], capture_output=True, text=True, timeout=CLI_TIMEOUT_S
    )
    assert done.returncode == 0, done.stderr
    rows = list(csv.reader(io.StringIO(done.stdout)))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert {r[0] for r in rows[1:]} == {"backoff", "no-backoff"}
    assert "clients attempting in the first second" in done.stderr
    assert "thundering herd" in done.stderr


def test_cli_in_process_writes_csv_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "storm.csv"
    args = ["reconnect-storm", "--clients", "500", "--accept-rate", "100", "--csv", str(path)]
    assert main([*args, "--bucket-ms", "250", "--jitter", "full"]) == 0
    assert path.read_text().startswith(",".join(CSV_COLUMNS))
    assert "admits at most 100 handshakes/s" in capsys.readouterr().out


def test_cli_rejects_bad_parameters(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["reconnect-storm", "--clients", "10", "--accept-rate", "0"]) == 2
    assert "accept rate" in capsys.readouterr().err
