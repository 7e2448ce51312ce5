"""Shared fixtures: a real Tidings server on a free loopback port.

The server runs in the test's event loop (aiohttp on 127.0.0.1, port 0) with
SQLite in the test's tmp directory: real sockets, real WebSocket handshakes,
real commits. Password hashing is made cheap by settings (the argon2 cost is
a documented setting), so that tests can create a thousand users.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tidings.app import Node, build_node, create_app, open_acceptor
from tidings.features import Feature
from tidings.http.acceptor import BatchAcceptor
from tidings.settings import Settings

# Cheap argon2 for tests: the production default is 64 MiB and 3 passes.
TEST_HASH_MEMORY_KIB = 256
TEST_HASH_TIME_COST = 1
TEST_HANDSHAKE_CONCURRENCY = 100_000


@dataclass
class RunningServer:
    node: Node
    runner: web.AppRunner
    acceptor: BatchAcceptor

    @property
    def port(self) -> int:
        return self.acceptor.port

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws"

    async def stop(self) -> None:
        await self.acceptor.close()
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


async def start_server(
    settings: Settings,
    port: int = 0,
    shutdown_timeout: float = 60.0,
    features: Sequence[Feature] = (),
) -> RunningServer:
    """A node served the way `tidings serve` serves it, on `port` (0: a free one)."""
    node = build_node(settings, features=features)
    runner = web.AppRunner(
        create_app(node),
        access_log=None,
        handle_signals=False,
        shutdown_timeout=shutdown_timeout,
    )
    await runner.setup()
    assert runner.server is not None
    acceptor = open_acceptor(node, runner.server, settings.replace(host="127.0.0.1", port=port))
    acceptor.start()
    return RunningServer(node, runner, acceptor)


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

    async def make(features: Sequence[Feature] = (), **overrides: Any) -> RunningServer:
        data_dir = tmp_path / f"node{len(started)}"
        settings = make_settings(data_dir, **{**cluster, **overrides})
        server = await start_server(settings, features=features)
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
