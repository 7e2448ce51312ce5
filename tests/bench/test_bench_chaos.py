"""Smoke test of ``tidings bench chaos``: a small run through the fault proxy, as a user runs it.

Ten resilient clients send 200 messages through links that are cut and
stalled; the row must show nothing lost or duplicated and every message held
by every recipient. The scenario runs in a subprocess with a hard timeout.
"""

from __future__ import annotations

import json
import subprocess
import sys

# Hard bound on the run (about 5 s on the 2-core machine).
RUN_TIMEOUT_S = 38.0
FIELDS = {
    "scenario",
    "sent",
    "acked",
    "first_attempt_success",
    "final_delivery_rate",
    "lost",
    "duplicates",
    "cuts",
    "stalls",
    "links",
    "seconds",
    "convergence_s",
    "date",
}


def _run(*extra: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "tidings_tools.bench.chaos", *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)


def test_chaos_row_shows_nothing_lost() -> None:
    done = _run(
        *("--clients", "10", "--messages", "200", "--seconds", "2"),
        *("--cut-rate", "0.3", "--stall-rate", "0.1", "--jitter-ms", "2", "--timeout", "25"),
    )
    assert done.returncode == 0, done.stderr
    assert "tidings bench chaos" in done.stderr  # the human summary
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    assert len(rows) == 1
    row = rows[0]
    assert row.keys() >= FIELDS
    assert row["scenario"] == "chaos"
    assert row["sent"] == row["acked"] == 200
    assert row["lost"] == 0
    assert row["duplicates"] == 0
    assert row["diverged"] == 0
    assert row["final_delivery_rate"] == 1.0
    assert row["delivered"] == row["expected"] == 100 * 1 + 100 * 9
    assert 0.0 < row["first_attempt_success"] <= 1.0
    assert row["links"] >= 10


def test_baseline_is_rejected() -> None:
    done = _run("--baseline")
    assert done.returncode == 2
    assert "not meaningful" in done.stderr
