"""The ``tidings`` command as an operator runs it: in subprocesses."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp

from tests.conftest import TEST_HASH_MEMORY_KIB, TEST_HASH_TIME_COST

WAIT_S = 30.0


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["TIDINGS_PASSWORD_HASH_MEMORY_KIB"] = str(TEST_HASH_MEMORY_KIB)
    env["TIDINGS_PASSWORD_HASH_TIME_COST"] = str(TEST_HASH_TIME_COST)
    env["TIDINGS_LOG_LEVEL"] = "warning"
    return env


def tidings(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tidings", *args],
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        env=_env(),
        check=False,
    )


def test_admin_commands_create_users_and_conversations(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    migrated = tidings("migrate", "--data-dir", data)
    assert migrated.returncode == 0, migrated.stderr
    assert (tmp_path / "data" / "tidings.db").exists()

    alice = tidings("user", "add", "alice", "--password", "alice-secret", "--data-dir", data)
    assert alice.returncode == 0, alice.stderr
    assert json.loads(alice.stdout)["username"] == "alice"
    generated = tidings("user", "add", "bob", "--data-dir", data)
    assert generated.returncode == 0, generated.stderr
    assert len(json.loads(generated.stdout)["password"]) >= 12

    again = tidings("user", "add", "ALICE", "--password", "another-secret", "--data-dir", data)
    assert again.returncode == 1
    assert again.stderr == "tidings: error: cannot add 'ALICE': username is taken\n"

    made = tidings(
        "conversation",
        "create",
        "--kind",
        "direct",
        "--creator",
        "alice",
        "bob",
        "--data-dir",
        data,
    )
    assert made.returncode == 0, made.stderr
    first = json.loads(made.stdout)
    assert first["created"] is True
    same = tidings(
        "conversation",
        "create",
        "--kind",
        "direct",
        "--creator",
        "bob",
        "alice",
        "--data-dir",
        data,
    )
    assert json.loads(same.stdout) == {**first, "created": False}

    missing = tidings("conversation", "create", "--creator", "alice", "nobody", "--data-dir", data)
    assert missing.returncode == 1
    assert "nobody" in missing.stderr


def test_settings_errors_are_reported(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("no_such_setting = 1\n")
    result = tidings("migrate", "--config", str(bad), "--data-dir", str(tmp_path))
    assert result.returncode == 1
    assert result.stderr == f"tidings: error: {bad}: unknown setting 'no_such_setting'\n"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_serve_answers_and_stops_on_sigterm(tmp_path: Path) -> None:
    """With a feature package plugged in from the ``features`` setting: its
    route is served and documented beside the API's."""
    port = _free_port()
    config = tmp_path / "tidings.toml"
    config.write_text(
        f"[tidings]\nport = {port}\nheartbeat_ms = 20000\n"
        'features = "tests.feature_probe.feature:served_probe"\n'
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tidings",
        "serve",
        "--config",
        str(config),
        "--data-dir",
        str(tmp_path / "data"),
        env=_env(),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with aiohttp.ClientSession() as session:
            async with asyncio.timeout(WAIT_S):
                while True:
                    try:
                        async with session.get(f"http://127.0.0.1:{port}/readyz") as resp:
                            assert resp.status == 200
                            break
                    except aiohttp.ClientConnectionError:
                        await asyncio.sleep(0.1)
            async with session.get(f"http://127.0.0.1:{port}/openapi.json") as resp:
                doc = await resp.json()
            assert "/v1/conversations/{cid}/messages" in doc["paths"]
            assert "/v1/probe" in doc["paths"]
            async with session.get(f"http://127.0.0.1:{port}/v1/probe") as resp:
                assert resp.status == 200, await resp.text()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), WAIT_S) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await asyncio.wait_for(proc.wait(), WAIT_S)


def test_serve_names_a_feature_that_does_not_load(tmp_path: Path) -> None:
    env_spec = "tests.feature_probe.feature:no_such_thing"
    result = subprocess.run(
        [sys.executable, "-m", "tidings", "serve", "--data-dir", str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        env={**_env(), "TIDINGS_FEATURES": env_spec},
        check=False,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert env_spec in lines[0], lines
    assert "TIDINGS_FEATURES" in lines[0], lines
