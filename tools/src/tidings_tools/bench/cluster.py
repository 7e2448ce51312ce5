"""Tidings on PostgreSQL (+ Redis) for the benchmark: a fresh database, N nodes, cleanup.

Why the tool starts the cluster itself: a fan-out across nodes only measures
the bus if every node shares one store and one bus and nothing else is on
them, and a benchmark that leaves databases and Redis keys behind on a
shared machine is a nuisance. So each invocation creates its own database
(``tidings_bench_<random>``) and its own Redis channel prefix, starts the
nodes (the first alone, so that it runs the migrations; then the others),
and at the end stops the nodes by PID, drops the database and deletes the
keys under the prefix.

Besides the nodes' own CPU time, the coordinator can read the CPU time of the
PostgreSQL backends serving the bench database (``/proc`` of the PIDs that
``pg_stat_activity`` lists) and of Redis (``INFO cpu``), so that a row says
where the machine's two cores went.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import secrets
import sys
from urllib.parse import urlsplit, urlunsplit

import asyncpg  # type: ignore[import-untyped]

from tidings_tools.bench.servers import Server, cpu_seconds, start_tidings

DEFAULT_POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DATABASE_PREFIX = "tidings_bench_"
REDIS_PREFIX = "tidings-bench-"
# Bound on one administrative call (connect, CREATE/DROP DATABASE, Redis).
ADMIN_TIMEOUT_S = 10.0
# Keys deleted per SCAN batch at cleanup.
SCAN_BATCH = 1000
STORE_POSTGRES = "postgres"
STORE_SQLITE = "sqlite"
BUS_REDIS = "redis"
BUS_MEMORY = "memory"


def with_database(url: str, database: str) -> str:
    """`url` with its path (the database name) replaced."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


async def _admin(admin_url: str) -> asyncpg.Connection:
    return await asyncpg.connect(admin_url, timeout=ADMIN_TIMEOUT_S)


async def create_database(admin_url: str) -> str:
    """Create an empty database ``tidings_bench_<random>``; return its name."""
    name = DATABASE_PREFIX + secrets.token_hex(6)
    conn = await _admin(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name


async def drop_database(admin_url: str, name: str) -> None:
    """Drop the database (connections still open to it are terminated)."""
    conn = await _admin(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def backend_pids(admin_url: str, name: str) -> list[int]:
    """PIDs of the PostgreSQL backends connected to database `name`."""
    conn = await _admin(admin_url)
    try:
        rows = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE datname = $1", name)
    finally:
        await conn.close()
    return [int(r["pid"]) for r in rows]


async def delete_redis_keys(url: str, prefix: str) -> int:
    """Delete every Redis key under `prefix`; how many there were."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url, socket_timeout=ADMIN_TIMEOUT_S)
    removed = 0
    try:
        async for key in client.scan_iter(match=f"{prefix}*", count=SCAN_BATCH):
            removed += int(await client.delete(key))
    finally:
        with contextlib.suppress(Exception):
            await client.aclose()
    return removed


async def redis_cpu_seconds(url: str) -> float | None:
    """Redis server CPU time (user + system) from ``INFO cpu``; None if unreadable."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url, socket_timeout=ADMIN_TIMEOUT_S)
    try:
        info = await client.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    except Exception:
        return None
    finally:
        with contextlib.suppress(Exception):
            await client.aclose()


@dataclasses.dataclass
class ServiceCpu:
    """A snapshot of the shared services' CPU counters (PIDs kept to pair before/after)."""

    postgres: dict[int, float]
    redis: float | None


@dataclasses.dataclass
class Cluster:
    """N Tidings nodes on one fresh PostgreSQL database and (for N > 1 or on request) Redis."""

    nodes: list[Server]
    admin_url: str
    database: str
    redis_url: str | None
    prefix: str | None

    @property
    def store_url(self) -> str:
        return with_database(self.admin_url, self.database)

    @property
    def bus(self) -> str:
        return BUS_REDIS if self.redis_url else BUS_MEMORY

    def service_cpu(self) -> ServiceCpu:
        """CPU seconds so far of the database's backends (per PID) and of Redis."""
        try:
            pids = asyncio.run(backend_pids(self.admin_url, self.database))
        except Exception:
            pids = []
        postgres = {pid: cpu for pid in pids if (cpu := cpu_seconds(pid)) is not None}
        redis = asyncio.run(redis_cpu_seconds(self.redis_url)) if self.redis_url else None
        return ServiceCpu(postgres, redis)

    def stop(self) -> None:
        """Stop the nodes by PID, drop the database, delete the Redis keys (each bounded)."""
        for node in self.nodes:
            node.stop()
        self.nodes = []
        try:
            asyncio.run(drop_database(self.admin_url, self.database))
        except Exception as exc:
            print(f"tidings bench: could not drop {self.database}: {exc}", file=sys.stderr)
        if self.redis_url and self.prefix:
            try:
                asyncio.run(delete_redis_keys(self.redis_url, self.prefix))
            except Exception as exc:
                print(f"tidings bench: could not delete {self.prefix}*: {exc}", file=sys.stderr)


def service_cpu_delta(before: ServiceCpu, after: ServiceCpu) -> tuple[float | None, float | None]:
    """(PostgreSQL backends, Redis) CPU seconds between two snapshots.

    Only backends present in both count (the nodes' pools keep theirs open for
    the whole run); a backend that appeared meanwhile counts from zero.
    """
    postgres = (
        sum(cpu - before.postgres.get(pid, 0.0) for pid, cpu in after.postgres.items())
        if after.postgres
        else None
    )
    redis = (
        after.redis - before.redis if after.redis is not None and before.redis is not None else None
    )
    return postgres, redis


def start_cluster(
    count: int, admin_url: str, redis_url: str | None, target: str = "tidings-cluster"
) -> Cluster:
    """A fresh database and `count` nodes on it; with `redis_url`, a Redis bus of their own.

    On any failure everything started so far is stopped and removed again.
    """
    database = asyncio.run(create_database(admin_url))
    prefix = f"{REDIS_PREFIX}{secrets.token_hex(6)}:" if redis_url else None
    cluster = Cluster([], admin_url, database, redis_url, prefix)
    env = {"TIDINGS_STORE": cluster.store_url}
    if redis_url and prefix:
        env |= {"TIDINGS_BUS": redis_url, "TIDINGS_BUS_PREFIX": prefix}
    try:
        # The first node alone: it migrates the empty database.
        cluster.nodes.append(start_tidings(env, target))
        for _ in range(1, count):
            cluster.nodes.append(start_tidings(env, target))
    except BaseException:
        cluster.stop()
        raise
    return cluster
