"""The SDK is a distribution of its own: installed into an empty virtualenv it
brings no server dependency, and the README's tour runs with it."""

from __future__ import annotations

import asyncio
import subprocess
import venv
from pathlib import Path

import pytest

from tests.conftest import RunningServer
from tests.test_readme import EXPECTED_OUTPUT, prepare_tour, tour_code

SDK = Path(__file__).resolve().parents[2] / "sdk" / "python"
SERVER_ONLY = {"asyncpg", "redis", "argon2-cffi", "prometheus-client", "uvloop", "tidings"}
INSTALL_S = 600.0
RUN_S = 60.0


def _install(target: Path) -> Path:
    venv.EnvBuilder(with_pip=True).create(target)
    python = target / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(SDK)],
        check=True,
        timeout=INSTALL_S,
    )
    return python


def _installed(python: Path) -> set[str]:
    listed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=freeze", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        check=True,
        timeout=RUN_S,
    )
    return {line.split("==")[0].lower() for line in listed.stdout.splitlines()}


@pytest.mark.slow
async def test_the_sdk_installs_alone_and_runs_the_tour(
    tidings_server: RunningServer, tmp_path: Path
) -> None:
    python = await asyncio.to_thread(_install, tmp_path / "venv")
    installed = await asyncio.to_thread(_installed, python)
    assert "tidings-client" in installed
    assert "aiohttp" in installed
    assert not installed & SERVER_ONLY, installed & SERVER_ONLY

    await prepare_tour(tidings_server)
    proc = await asyncio.create_subprocess_exec(
        str(python),
        "-c",
        tour_code(tidings_server.port),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=tmp_path,  # not the repository: nothing of it on the path
    )
    out, err = await asyncio.wait_for(proc.communicate(), RUN_S)
    assert proc.returncode == 0, err.decode()
    assert out.decode().splitlines() == EXPECTED_OUTPUT
