"""Every operator mistake docs/operations.md lists: one line on stderr that
says what is wrong and what to do, a non-zero exit, and no traceback."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services_postgres import PostgresService, postgres_admin_url
from tests.services_postgres import postgres_service as postgres_service  # the fixture
from tests.test_cli import WAIT_S, _env

# (name, extra environment, arguments, a fragment the line must contain)
Mistake = tuple[str, dict[str, str], list[str], str]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.fixture(scope="module")
def busy_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def _mistakes(tmp: Path, busy: int, pg_server: str) -> list[Mistake]:
    data = str(tmp / "data")
    a_file = tmp / "a-file"
    a_file.write_text("not a folder")
    return [
        ("port in use", {}, ["serve", "--data-dir", data, "--port", str(busy)], "is in use"),
        ("port out of range", {}, ["serve", "--port", "70000"], "port must be 1-65535"),
        ("port from env", {"TIDINGS_PORT": "-1"}, ["serve"], "TIDINGS_PORT: port must be"),
        (
            "postgres unreachable",
            {"TIDINGS_STORE": f"postgresql://postgres@127.0.0.1:{_closed_port()}/x"},
            ["serve", "--port", str(_closed_port())],
            "cannot open the store",
        ),
        (
            "postgres database missing",
            {"TIDINGS_STORE": f"{pg_server}/tidings_no_such_database"},
            ["user", "list"],
            'database "tidings_no_such_database" does not exist',
        ),
        ("unsupported store", {"TIDINGS_STORE": "mysql://db/x"}, ["migrate"], "store URL"),
        ("unsupported bus", {"TIDINGS_BUS": "kafka://x"}, ["serve"], "unsupported bus URL"),
        (
            "bad synchronous",
            {"TIDINGS_SQLITE_SYNCHRONOUS": "fast"},
            ["migrate", "--data-dir", data],
            "sqlite_synchronous must be one of",
        ),
        ("data dir is a file", {}, ["serve", "--data-dir", str(a_file)], "is a file"),
        (
            "data dir parent missing",
            {},
            ["migrate", "--data-dir", str(tmp / "no" / "such")],
            "does not exist; create it first",
        ),
        (
            "data dir missing",
            {},
            ["user", "add", "carol", "--password", "carol-secret", "--data-dir", str(tmp / "dta")],
            "does not exist; pass the --data-dir",
        ),
        (
            "backup folder missing",
            {},
            ["backup", str(tmp / "nope" / "b.db"), "--data-dir", data],
            "does not exist; create it first",
        ),
        (
            "bad username",
            {},
            ["user", "add", "bad name!", "--password", "long-enough", "--data-dir", data],
            "a username is 3-32",
        ),
        (
            "empty username",
            {},
            ["user", "add", "", "--password", "long-enough", "--data-dir", data],
            "a username is 3-32",
        ),
        (
            "short password",
            {},
            ["user", "add", "dave", "--password", "x", "--data-dir", data],
            "a password is 8-1024",
        ),
        ("unknown user", {}, ["user", "disable", "nobody", "--data-dir", data], "no user"),
        (
            "restore from missing file",
            {},
            ["restore", "--from", str(tmp / "missing.db"), "--data-dir", data],
            "does not exist",
        ),
        (
            "restore --from on postgres",
            {"TIDINGS_STORE": f"{pg_server}/postgres"},
            ["restore", "--from", str(a_file)],
            "pg_restore",
        ),
        ("missing config", {}, ["migrate", "--config", str(tmp / "no.toml")], "settings file"),
    ]


async def test_every_documented_mistake_is_one_line(
    tmp_path: Path, busy_port: int, postgres_service: PostgresService
) -> None:
    pg_server = (await postgres_admin_url()).rsplit("/", 1)[0]
    await asyncio.to_thread(_check_all, tmp_path, busy_port, pg_server)


def _check_all(tmp_path: Path, busy_port: int, pg_server: str) -> None:
    made = _run({}, ["migrate", "--data-dir", str(tmp_path / "data")])
    assert made.returncode == 0, made.stderr
    for name, env, args, fragment in _mistakes(tmp_path, busy_port, pg_server):
        result = _run(env, args)
        lines = result.stderr.splitlines()
        assert result.returncode == 1, (name, result.returncode, result.stderr)
        assert len(lines) == 1, (name, result.stderr)
        assert lines[0].startswith("tidings: error: "), (name, lines)
        assert fragment in lines[0], (name, lines)
        assert "Traceback" not in result.stderr + result.stdout, name


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = _run({}, ["--debug", "user", "list", "--data-dir", str(tmp_path / "none")])
    assert result.returncode == 1
    assert "Traceback" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("tidings: error: data directory")


def test_version_and_help_speak_to_users() -> None:
    version = _run({}, ["--version"])
    assert version.returncode == 0
    assert version.stdout.startswith("tidings ")
    helps = (
        ["--help"],
        ["serve", "--help"],
        ["restore", "--help"],
        ["user", "add", "-h"],
        ["bench", "--help"],
        ["bench", "fanout", "--help"],
        ["bench", "restart-storm", "--help"],
        ["bench", "chaos", "--help"],
        ["sim", "reconnect-storm", "--help"],
    )
    for args in helps:
        shown = _run({}, args)
        assert shown.returncode == 0, args
        for internal in ("``", ":class:", "Issue ", "FM7", "shared/"):
            assert internal not in shown.stdout, (args, internal)
    assert "TIDINGS_DATA_DIR" in _run({}, ["serve", "--help"]).stdout


def _run(env: dict[str, str], args: list[str]) -> subprocess.CompletedProcess[str]:
    full = {**_env(), **env}
    for name in ("TIDINGS_STORE", "TIDINGS_BUS", "TIDINGS_PRESENCE"):
        if name not in env:
            full.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "tidings", *args],
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        env=full,
        check=False,
        cwd=os.getcwd(),
    )
