"""``tidings bench push``, tiny, as a user runs it: it starts its own node,
every member is told of every message exactly once (webhooks and Web Push,
the latter decrypted with the members' keys), and the rows carry the figures
docs/benchmarks.md quotes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

RUN_TIMEOUT_S = 120.0


@pytest.mark.parametrize("kind", ["webhook", "webpush"])
def test_push_scenario_tells_every_member_once(kind: str) -> None:
    command = [
        sys.executable, "-m", "tidings_tools.bench", "push", "--members", "6",
        "--messages", "2", "--interval", "0.2", "--kind", kind, "--baseline",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert done.returncode == 0, done.stderr
    assert "tidings bench push" in done.stderr
    ours, bare = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    assert (ours["target"], bare["target"]) == ("tidings", "baseline")
    assert ours["expected"] == ours["received"] == 5 * 2
    assert ours["duplicates"] == 0
    assert ours["kind"] == kind
    assert ours["notifications_per_s"] > 0
    assert ours["last_p95_ms"] >= ours["last_p50_ms"] > 0
    assert ours["ping_acks"] > 0
    assert bare["posts"] == 10
    assert bare["posts_per_s"] > 0
