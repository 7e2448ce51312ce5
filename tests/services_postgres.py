"""Finding (or starting) PostgreSQL for the tests, and one database per test.

Discovery, in order:

1. ``TIDINGS_TEST_POSTGRES_URL`` (an admin URL: a role allowed to CREATE and
   DROP DATABASE), default ``postgresql://postgres@127.0.0.1:5432/postgres``.
2. If that server does not answer and ``CI=true``: the test **fails** (a CI
   job that silently skips its PostgreSQL tests would prove nothing).
3. Otherwise, on a developer machine: a throwaway server is started from the
   system binaries (``/usr/lib/postgresql/*/bin``, as installed by the
   ``postgresql`` package) in a temporary directory on a free port, with
   durability off (it is thrown away), and stopped by PID at the end of the
   session. Without binaries the tests are skipped with a hint.

Each test gets a fresh database ``tidings_test_<random>`` created from a
session template that already holds the migrated schema (``CREATE DATABASE
... TEMPLATE`` copies files: faster than migrating every time), and dropped
after the test (its connections terminated first). The template has no
``meta`` row, so each test database draws its own epoch on first start.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg  # type: ignore[import-untyped]
import pytest

from tidings.store.postgres import PostgresStore

ENV_URL = "TIDINGS_TEST_POSTGRES_URL"
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"

PROBE_TIMEOUT_S = 3.0
"""How long to wait for the configured server before declaring it absent: a
local server answers in milliseconds; a firewalled port would otherwise hang
the whole session for asyncpg's default 60 s."""

STARTUP_TIMEOUT_S = 30.0
"""Upper bound for initdb + the first accepted connection of a throwaway
server (a few seconds on a laptop, more on a loaded CI runner)."""

SHUTDOWN_TIMEOUT_S = 10.0
"""Wait for the throwaway postmaster to exit after SIGINT (fast shutdown)
before killing it."""

BINARY_GLOB = "/usr/lib/postgresql/*/bin"

SKIP_HINT = (
    "PostgreSQL is not reachable at {url} and no server binaries were found under"
    f" {BINARY_GLOB}: start one (e.g. `docker run -p 5432:5432"
    " -e POSTGRES_HOST_AUTH_METHOD=trust postgres:15`), point {env} at one, or install"
    " the `postgresql` package so the tests can start a throwaway server"
)


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def with_database(url: str, database: str) -> str:
    """``url`` with its database replaced by ``database``."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


async def _reachable(url: str) -> str | None:
    """None if PostgreSQL at ``url`` answers, else why not."""
    try:
        conn = await asyncpg.connect(url, timeout=PROBE_TIMEOUT_S)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return f"{type(exc).__name__}: {exc}"
    await conn.close()
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ThrowawayServer:
    """A PostgreSQL started by the tests; ``stop`` signals its postmaster by PID."""

    process: subprocess.Popen[bytes]
    directory: Path
    port: int

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @classmethod
    def start(cls, bindir: Path) -> ThrowawayServer:
        directory = Path(tempfile.mkdtemp(prefix="tidings-pg-"))
        data = directory / "data"
        # initdb and postgres refuse to run as root: use the packaged
        # "postgres" account then (the tests own the directory either way).
        user: int | None = None
        group: int | None = None
        if os.geteuid() == 0:
            try:
                account = pwd.getpwnam("postgres")
            except KeyError:
                shutil.rmtree(directory, ignore_errors=True)
                raise RuntimeError("running as root and there is no 'postgres' user") from None
            user, group = account.pw_uid, account.pw_gid
            os.chown(directory, user, group)
        subprocess.run(
            [
                *(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"),
                *("-E", "UTF8", "--no-sync", "--no-instructions"),
            ],
            check=True,
            capture_output=True,
            user=user,
            group=group,
            timeout=STARTUP_TIMEOUT_S,
        )
        port = _free_port()
        log = (directory / "server.log").open("wb")
        process = subprocess.Popen(
            [
                *(str(bindir / "postgres"), "-D", str(data), "-p", str(port)),
                *("-k", str(directory), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"),
                *("-c", "synchronous_commit=off", "-c", "full_page_writes=off"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            user=user,
            group=group,
        )
        log.close()
        return cls(process, directory, port)

    async def wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if self.process.poll() is not None:
                log = (self.directory / "server.log").read_text(errors="replace")
                raise RuntimeError(f"throwaway PostgreSQL exited:\n{log}")
            if await _reachable(self.admin_url) is None:
                return
            if time.monotonic() > deadline:
                raise RuntimeError("throwaway PostgreSQL did not accept connections in time")
            await asyncio.sleep(0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGINT)  # fast shutdown
            try:
                self.process.wait(SHUTDOWN_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


def _find_bindir() -> Path | None:
    for candidate in sorted(glob.glob(BINARY_GLOB), reverse=True):  # newest major first
        path = Path(candidate)
        if (path / "initdb").exists() and (path / "postgres").exists():
            return path
    return None


@dataclass
class PostgresService:
    """Session-wide state: the admin URL, a throwaway server, the template."""

    admin_url: str | None = None
    unavailable: str | None = None
    server: ThrowawayServer | None = None
    template: str | None = None
    pending: list[str] = field(default_factory=list)
    """Databases created for the running test, dropped after it."""

    async def resolve(self) -> str:
        if self.admin_url is not None:
            return self.admin_url
        if self.unavailable is not None:
            pytest.skip(self.unavailable)
        url = os.environ.get(ENV_URL) or DEFAULT_ADMIN_URL
        problem = await _reachable(url)
        if problem is None:
            self.admin_url = url
            return url
        if _in_ci():
            pytest.fail(
                f"PostgreSQL is required in CI but not reachable at {url} ({problem});"
                f" set {ENV_URL} to a server the tests may create databases on",
                pytrace=False,
            )
        bindir = _find_bindir()
        if bindir is None:
            self.unavailable = SKIP_HINT.format(url=url, env=ENV_URL)
            pytest.skip(self.unavailable)
        self.server = await asyncio.to_thread(ThrowawayServer.start, bindir)
        await self.server.wait_ready()
        self.admin_url = self.server.admin_url
        return self.admin_url

    async def _ensure_template(self, admin_url: str) -> str:
        if self.template is not None:
            return self.template
        name = f"tidings_tpl_{secrets.token_hex(6)}"
        conn = await asyncpg.connect(admin_url, timeout=PROBE_TIMEOUT_S)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        store = PostgresStore(with_database(admin_url, name), min_size=1, max_size=1)
        await store.start()
        await store.close()
        conn = await asyncpg.connect(with_database(admin_url, name), timeout=PROBE_TIMEOUT_S)
        try:
            await conn.execute("DELETE FROM meta")  # each copy draws its own epoch
        finally:
            await conn.close()
        self.template = name
        return name

    async def create_database(self, *, migrated: bool = True) -> str:
        """Create a fresh database for the running test; return its URL.

        ``migrated``: copy the session template (schema applied, no epoch yet);
        otherwise the database is empty (to test the migrator itself).
        """
        admin_url = await self.resolve()
        template = await self._ensure_template(admin_url) if migrated else "template0"
        name = f"tidings_test_{secrets.token_hex(6)}"
        conn = await asyncpg.connect(admin_url, timeout=PROBE_TIMEOUT_S)
        try:
            await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        finally:
            await conn.close()
        self.pending.append(name)
        return with_database(admin_url, name)

    async def drop_pending(self) -> None:
        """Drop the databases of the test that just ended."""
        names, self.pending = self.pending, []
        if names and self.admin_url is not None:
            await _drop_databases(self.admin_url, names)

    def finish(self) -> None:
        """End of session: drop the template, stop a throwaway server."""
        if self.template is not None and self.admin_url is not None and self.server is None:
            with contextlib.suppress(Exception):
                asyncio.run(_drop_databases(self.admin_url, [self.template]))
        self.template = None
        if self.server is not None:
            self.server.stop()
            self.server = None


async def _drop_databases(admin_url: str, names: list[str]) -> None:
    conn = await asyncpg.connect(admin_url, timeout=PROBE_TIMEOUT_S)
    try:
        for name in names:
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = $1 AND pid <> pg_backend_pid()",
                name,
            )
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


SERVICE = PostgresService()
"""The one per test session (module state: pytest imports this module once)."""


async def postgres_admin_url() -> str:
    """The admin URL of a reachable PostgreSQL (see the module docstring)."""
    return await SERVICE.resolve()


async def create_test_database(*, migrated: bool = True) -> str:
    """A fresh database for the running test (dropped by ``drop_test_databases``)."""
    return await SERVICE.create_database(migrated=migrated)


async def drop_test_databases() -> None:
    await SERVICE.drop_pending()


@pytest.fixture(scope="session")
def postgres_service() -> Iterator[PostgresService]:
    """Session scope: whatever was started for the session is stopped at its end."""
    yield SERVICE
    SERVICE.finish()


@pytest.fixture
async def postgres_url(postgres_service: PostgresService) -> AsyncIterator[str]:
    """The URL of a fresh, migrated database of this test, dropped afterwards."""
    url = await postgres_service.create_database()
    try:
        yield url
    finally:
        await postgres_service.drop_pending()
