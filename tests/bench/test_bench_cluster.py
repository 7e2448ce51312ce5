"""Smoke test of ``tidings bench fanout --cluster``: 2 nodes on PostgreSQL + Redis, tiny.

What it pins down: the tool creates a database and a Redis prefix of its own,
starts two nodes on them, spreads the members' connections over both (so the
messages cross Redis), counts every delivery, and removes the database again.
PostgreSQL and Redis are found with the suite's helpers: on a developer
machine without them the test is skipped (or throwaway servers are started),
and with ``CI=true`` it **fails**, because a skipped cluster test proves
nothing.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import asyncpg  # type: ignore[import-untyped]

from tests.services_postgres import PostgresService, postgres_service
from tests.services_redis import redis_url

__all__ = ["postgres_service"]

# Hard bound on the whole run (about 3 s on the 2-core machine: two node
# starts, six accounts, three messages).
RUN_TIMEOUT_S = 45.0
MEMBERS = 6
MESSAGES = 3
NODES = 2


async def _bench_databases(admin_url: str) -> set[str]:
    conn = await asyncpg.connect(admin_url, timeout=5.0)
    try:
        rows = await conn.fetch(
            "SELECT datname FROM pg_database WHERE datname LIKE 'tidings\\_bench\\_%'"
        )
    finally:
        await conn.close()
    return {str(r["datname"]) for r in rows}


async def test_fanout_across_two_nodes(postgres_service: PostgresService) -> None:
    admin_url = await postgres_service.resolve()
    bus_url = redis_url()
    before = await _bench_databases(admin_url)
    command = [
        *(sys.executable, "-m", "tidings_tools.bench", "fanout", "--cluster", str(NODES)),
        *("--members", str(MEMBERS), "--messages", str(MESSAGES), "--procs", "1"),
        *("--postgres-url", admin_url, "--redis-url", bus_url),
    ]
    done = await asyncio.to_thread(
        subprocess.run, command, capture_output=True, text=True, timeout=RUN_TIMEOUT_S
    )
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    assert len(rows) == 1
    row = rows[0]
    assert row["target"] == "tidings-cluster"
    assert (row["nodes"], row["store"], row["bus"]) == (NODES, "postgres", "redis")
    assert row["connected"] == MEMBERS
    assert row["expected"] == (MEMBERS - 1) * MESSAGES
    assert row["delivered"] == row["expected"]
    assert row["complete_messages"] == MESSAGES
    assert row["duplicates"] == 0
    assert row["errors"] == {}
    assert isinstance(row["last_p95_ms"], float)
    assert len(row["node_cpu_s"]) == NODES
    # The run's database is gone again.
    assert await _bench_databases(admin_url) <= before
