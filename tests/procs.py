"""Tidings as a separate process, the way an operator runs it: shared by the
tests that kill, restart, drain or back up a server."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path

import aiohttp

from tests.conftest import TEST_HANDSHAKE_CONCURRENCY, TEST_HASH_MEMORY_KIB, TEST_HASH_TIME_COST
from tests.wire import WAIT_S


def node_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        TIDINGS_PASSWORD_HASH_MEMORY_KIB=str(TEST_HASH_MEMORY_KIB),
        TIDINGS_PASSWORD_HASH_TIME_COST=str(TEST_HASH_TIME_COST),
        TIDINGS_LOG_LEVEL="warning",
        TIDINGS_SEND_BURST="100000",
        TIDINGS_SEND_RATE_PER_S="100000",
        TIDINGS_HANDSHAKE_CONCURRENCY=str(TEST_HANDSHAKE_CONCURRENCY),
    )
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def spawn_server(data_dir: Path, port: int, **env: str) -> asyncio.subprocess.Process:
    """Start ``tidings serve`` in a subprocess and wait (bounded) until it is ready."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tidings",
        "serve",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        env=node_env(**env),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    async with aiohttp.ClientSession() as session, asyncio.timeout(WAIT_S * 3):
        while True:
            try:
                async with session.get(f"http://127.0.0.1:{port}/readyz") as resp:
                    if resp.status == 200:
                        return proc
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.05)


async def run_tidings(*args: str) -> tuple[int, str]:
    """Run the ``tidings`` command; its exit code and standard error."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tidings",
        *args,
        env=node_env(),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), WAIT_S * 3)
    assert proc.returncode is not None
    return proc.returncode, err.decode()
