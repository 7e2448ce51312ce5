"""Shared fixtures: a real Tidings server on a free loopback port.

The server runs in the test's event loop (aiohttp on 127.0.0.1, port 0) with
SQLite in the test's tmp directory: real sockets, real WebSocket handshakes,
real commits. Password hashing is made cheap by settings (the argon2 cost is
a documented setting), so that tests can create a thousand users.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tidings.app import Node, build_node, create_app
from tidings.settings import Settings

# Cheap argon2 for tests: the production default is 64 MiB and 3 passes.
TEST_HASH_MEMORY_KIB = 256
TEST_HASH_TIME_COST = 1
TEST_HANDSHAKE_CONCURRENCY = 100_000


@dataclass
class RunningServer:
    node: Node
    runner: web.AppRunner
    port: int

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws"

    async def stop(self) -> None:
        await self.runner.cleanup()


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    base = Settings(
        data_dir=str(data_dir),
        password_hash_memory_kib=TEST_HASH_MEMORY_KIB,
        password_hash_time_cost=TEST_HASH_TIME_COST,
        log_level="warning",
        # Tests connect hundreds of raw clients at once, without the SDK's
        # 503 handling; the admission tests set their own limits.
        handshake_concurrency=TEST_HANDSHAKE_CONCURRENCY,
    )
    return base.replace(**overrides)


async def start_server(settings: Settings) -> RunningServer:
    node = build_node(settings)
    runner = web.AppRunner(create_app(node), access_log=None, handle_signals=False)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    site = web.SockSite(runner, sock)
    await site.start()
    return RunningServer(node, runner, sock.getsockname()[1])


ServerFactory = Callable[..., Awaitable[RunningServer]]


@pytest.fixture
def backend() -> str:
    """Which backends servers use: "sqlite" (SQLite + in-process bus) here;
    tests/e2e parametrises it over "postgres" (PostgreSQL + Redis) too."""
    return "sqlite"


@pytest.fixture
async def server_factory(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> AsyncIterator[ServerFactory]:
    """Start servers with settings overrides; all are stopped after the test.

    With the "postgres" backend every server of the test shares one fresh
    PostgreSQL database and one Redis key prefix: several servers form a
    cluster, as in production.
    """
    started: list[RunningServer] = []
    cluster: dict[str, str] = {}
    if backend == "postgres":
        from tests.services_postgres import PostgresService
        from tests.services_redis import redis_url, unique_prefix

        service: PostgresService = request.getfixturevalue("postgres_service")
        cluster = {
            "store": await service.create_database(),
            "bus": redis_url(),
            "bus_prefix": unique_prefix(),
        }

    async def make(**overrides: Any) -> RunningServer:
        data_dir = tmp_path / f"node{len(started)}"
        server = await start_server(make_settings(data_dir, **{**cluster, **overrides}))
        started.append(server)
        return server

    try:
        yield make
    finally:
        for server in reversed(started):
            await server.stop()
        if cluster:
            from tests.services_redis import delete_prefixed_keys

            await service.drop_pending()
            await delete_prefixed_keys(cluster["bus"], cluster["bus_prefix"])


@pytest.fixture
async def tidings_server(server_factory: ServerFactory) -> RunningServer:
    """A running server on default test settings."""
    return await server_factory()
