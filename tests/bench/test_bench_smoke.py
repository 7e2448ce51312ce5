"""Smoke test of ``tidings bench``: every scenario, tiny, against the baseline server only.

Why only the baseline: this checks the benchmark tool itself (its processes,
phases and rows), not Tidings, and must stay fast and independent of the
server's state of completion. Each scenario runs in a subprocess, as a user
runs it, with a hard timeout.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# Hard bound on one scenario run (they take 2-4 s each on the 2-core machine).
RUN_TIMEOUT_S = 60.0

COMMON_FIELDS = {"scenario", "target", "run", "date"}
SCENARIOS: dict[str, tuple[list[str], set[str]]] = {
    "fanout": (
        ["--members", "5", "--messages", "3"],
        {"members", "messages", "expected", "delivered"}
        | {"last_p50_ms", "last_p95_ms", "last_p99_ms", "cpu_us_per_delivery"},
    ),
    "throughput": (
        ["--pairs", "2", "--seconds", "1"],
        {"pairs", "seconds", "msgs_per_s", "p50_ms", "p99_ms", "completed", "sent"},
    ),
    "connections": (
        ["--count", "20"],
        {"count", "connected", "failed", "rss_per_conn_kib", "connect_per_s"},
    ),
}


def _rows(scenario: str, extra: list[str]) -> list[dict[str, object]]:
    command = [sys.executable, "-m", "tidings_tools.bench", scenario, "--only-baseline", *extra]
    done = subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert done.returncode == 0, done.stderr
    assert f"tidings bench {scenario}" in done.stderr  # the human summary
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_scenario_rows(scenario: str) -> None:
    extra, fields = SCENARIOS[scenario]
    rows = _rows(scenario, extra)
    assert len(rows) == 1
    row = rows[0]
    assert COMMON_FIELDS | fields <= row.keys()
    assert row["scenario"] == scenario
    assert row["target"] == "baseline"
    assert row["errors"] == {}
    if scenario == "fanout":
        assert row["expected"] == 4 * 3
        assert row["delivered"] == row["expected"]
        assert row["duplicates"] == 0
        assert isinstance(row["last_p95_ms"], float)
    elif scenario == "throughput":
        assert isinstance(row["completed"], int)
        assert row["completed"] > 0
        assert row["msgs_per_s"] == row["completed"]  # over one second
        assert row["delivered"] == row["acks"] == row["sent"]
    else:
        assert row["connected"] == row["count"] == 20
        assert row["failed"] == 0
        assert isinstance(row["connect_per_s"], float)
