"""Finding (or starting) the Redis that tests run against.

``redis_url()`` answers TIDINGS_TEST_REDIS_URL (default
redis://127.0.0.1:6379/0). If nothing answers there:

- in CI (``CI=true``) the test fails: a missing service must never turn into a
  green run of skipped tests;
- elsewhere a throwaway ``redis-server`` (the system binary) is started on a
  free port for the rest of the session and stopped by PID at exit;
- without the binary the test is skipped with a message saying how to fix it.

:class:`RedisServer` is a throwaway server that a test can stop and start
again on the same port, to cut a node from Redis (partition tests).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
# A local redis-server is ready within ~50 ms; 10 s covers a loaded CI box.
SERVER_START_TIMEOUT_S = 10.0
# A refused or silent loopback port answers within this; beyond it, it is down.
PROBE_TIMEOUT_S = 0.5

_session_server: RedisServer | None = None
_resolved_url: str | None = None


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def probe(url: str) -> bool:
    """True if a Redis at ``url`` answers PING (plain TCP, no password check)."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 6379
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S) as sock:
            sock.settimeout(PROBE_TIMEOUT_S)
            sock.sendall(b"PING\r\n")
            reply = sock.recv(64)
    except OSError:
        return False
    # +PONG, or -NOAUTH from a password-protected server (still a Redis).
    return reply.startswith((b"+PONG", b"-NOAUTH"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def redis_server_binary() -> str | None:
    return os.environ.get("TIDINGS_TEST_REDIS_SERVER") or shutil.which("redis-server")


class RedisServer:
    """A throwaway, non-persistent redis-server on 127.0.0.1:``port``."""

    def __init__(self, port: int | None = None) -> None:
        binary = redis_server_binary()
        if binary is None:
            raise FileNotFoundError("redis-server not found (set TIDINGS_TEST_REDIS_SERVER)")
        self.binary = binary
        self.port = port if port is not None else free_port()
        self._dir = tempfile.mkdtemp(prefix="tidings-redis-")
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start (again) on the same port; return once it answers PING."""
        if self.running:
            return
        self._proc = subprocess.Popen(
            [
                self.binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", self._dir,
                "--daemonize", "no",
                "--loglevel", "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while not probe(self.url):
            if self._proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self._proc.returncode}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server on port {self.port} did not answer")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop the process (by its PID) and wait for it to exit."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=SERVER_START_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=SERVER_START_TIMEOUT_S)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)


def _stop_session_server() -> None:
    if _session_server is not None:
        _session_server.cleanup()


def redis_url() -> str:
    """The Redis for this test session (see the module doc); skips or fails
    the calling test when there is none."""
    global _session_server, _resolved_url
    if _resolved_url is not None:
        return _resolved_url
    url = os.environ.get("TIDINGS_TEST_REDIS_URL", DEFAULT_REDIS_URL)
    if probe(url):
        _resolved_url = url
        return url
    if _in_ci():
        pytest.fail(
            f"Redis is not reachable at {url} and CI=true: start Redis or set "
            "TIDINGS_TEST_REDIS_URL (tests never skip a missing service in CI)",
            pytrace=False,
        )
    if redis_server_binary() is None:
        pytest.skip(
            f"Redis is not reachable at {url} and no redis-server binary was found: "
            "start Redis, set TIDINGS_TEST_REDIS_URL, or install redis-server"
        )
    server = RedisServer()
    server.start()
    _session_server = server
    atexit.register(_stop_session_server)
    _resolved_url = server.url
    return server.url


def unique_prefix() -> str:
    """A key/channel prefix of its own for one test, so runs never collide."""
    return f"tidings-test-{uuid.uuid4().hex}:"


async def delete_prefixed_keys(url: str, prefix: str) -> int:
    """Remove every key under ``prefix``; how many there were."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url, protocol=2)
    removed = 0
    try:
        async for key in client.scan_iter(match=f"{prefix}*", count=1000):
            removed += int(await client.delete(key))
    finally:
        with contextlib.suppress(Exception):
            await client.aclose()
    return removed


def throwaway_redis_server() -> Iterator[RedisServer]:
    """Fixture body: a throwaway redis-server a test may stop and start again.

    Without the ``redis-server`` binary it skips on a laptop and fails in CI,
    where a test that needs a service must not pass by not running.
    """
    if redis_server_binary() is None:
        message = "the outage tests need the redis-server binary"
        if _in_ci():
            pytest.fail(message)
        pytest.skip(message)
    srv = RedisServer(free_port())
    srv.start()
    yield srv
    srv.cleanup()
