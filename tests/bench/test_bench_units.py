"""Unit tests of the benchmark tool's pieces that the smoke runs cannot pin down.

- ``sleep_until`` must never return before its wall-clock instant: uvloop's
  timers have millisecond resolution and may fire up to about a millisecond
  early, which once made the fan-out sender's first message look older than
  the run (and every receiver drop it: ``delivered`` 8 of 12).
- A run that raises still prints its row (with the error) and the command
  exits non-zero, instead of printing nothing.
"""

from __future__ import annotations

import argparse
import json
import random
import time

import pytest
import uvloop

from tidings_tools.bench import command
from tidings_tools.bench.loadgen import sleep_until

# Sleeps per check, and the range of their lengths (ns): short, as the
# fan-out sender's are, where a millisecond of rounding matters most.
SLEEPS = 60
SLEEP_MIN_NS = 200_000
SLEEP_MAX_NS = 5_000_000


def test_sleep_until_never_wakes_early() -> None:
    early: list[int] = []

    async def check() -> None:
        for _ in range(SLEEPS):
            due = time.time_ns() + random.randint(SLEEP_MIN_NS, SLEEP_MAX_NS)
            await sleep_until(due)
            woke = time.time_ns()
            if woke < due:
                early.append(due - woke)

    uvloop.run(check())
    assert early == []


class _FakeTarget:
    name = "baseline"


def _args(scenario: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    command.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["bench", scenario, "--only-baseline", "--repeat", "2"])


def test_failed_run_still_prints_its_row(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[int] = []

    def run_one(args: argparse.Namespace, target: object, run: int) -> dict[str, object]:
        calls.append(run)
        if run == 1:
            raise RuntimeError("worker 0: Traceback ...\nConnectionResetError: reset by peer")
        return {
            "scenario": "fanout",
            "target": "baseline",
            "run": run,
            "expected": 12,
            "delivered": 12,
            "last_p95_ms": 1.5,
            "errors": {"error:rate_limited": 3},
        }

    monkeypatch.setattr(command, "_targets", lambda args, started: [_FakeTarget()])
    monkeypatch.setattr(command, "_run_one", run_one)
    code = command.run(_args("fanout"))
    out, err = capsys.readouterr()
    rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert code == 1
    assert calls == [1, 2]  # the failure does not stop the other runs
    assert [r["run"] for r in rows] == [1, 2]
    assert rows[0]["failed"] is True
    assert rows[0]["errors"] == {"run:RuntimeError": 1}
    assert rows[0]["failure"] == "ConnectionResetError: reset by peer"
    assert rows[1]["errors"] == {"error:rate_limited": 3}
    assert "run:RuntimeError x1" in err
    assert "error:rate_limited x3" in err
    assert "delivered 12/12" in err
