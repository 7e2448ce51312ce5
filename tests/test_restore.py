"""``tidings restore --from``: refused with one line and no change, or done atomically.

Each refusal is checked byte for byte on every file of the data directory
(the database and its WAL, which holds what was written since the last
checkpoint); a restore killed after each of its steps leaves a store that
opens and holds either the old history or the backup's, never neither.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.procs import free_port, spawn_server
from tests.services_postgres import postgres_service as postgres_service  # the fixture
from tests.services_postgres import postgres_url as postgres_url  # the fixture
from tests.test_cli import WAIT_S, _env, tidings

STEPS = ("stage", "stamp_epoch", "keep_replaced", "checkpoint_live", "swap")

# Kills the process (as SIGKILL would) right after one step of the restore.
DIE_AFTER_STEP = """
import os, sys
from tidings.cli import restore
step = sys.argv[1]
original = getattr(restore, step)
def dying(*args, **kwargs):
    result = original(*args, **kwargs)
    if hasattr(result, "__await__"):
        async def finish():
            value = await result
            os._exit(9)
        return finish()
    os._exit(9)
setattr(restore, step, dying)
from tidings.cli import main
sys.exit(main(sys.argv[2:]))
"""


WRITE_TO_WAL_AND_DIE = """
import os, sqlite3, sys
conn = sqlite3.connect(sys.argv[1])
conn.execute("PRAGMA wal_autocheckpoint=0")
conn.execute("INSERT INTO users (user_id, username, password_hash, created_at)"
             " VALUES ('u_bob', 'bob', 'x', 1)")
conn.commit()
os._exit(0)
"""


def _snapshot(folder: Path) -> dict[str, str]:
    """Every store file's digest (the lock file is not the store, nor is the
    search index's folder, which the running server writes)."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
        if p.is_file() and not p.name.endswith(".lock")
    }


def _usernames(data: Path) -> list[str]:
    listed = tidings("user", "list", "--json", "--data-dir", str(data))
    assert listed.returncode == 0, listed.stderr
    return [json.loads(line)["username"] for line in listed.stdout.splitlines()]


@pytest.fixture
def store_with_backup(tmp_path: Path) -> tuple[Path, Path]:
    """A data dir whose newest user lives only in the WAL, and a backup without it."""
    data = tmp_path / "data"
    assert tidings("migrate", "--data-dir", str(data)).returncode == 0
    assert tidings("user", "add", "alice", "--password", "alice-secret", "--data-dir", str(data))
    backup = tmp_path / "monday.db"
    made = tidings("backup", str(backup), "--data-dir", str(data))
    assert made.returncode == 0, made.stderr
    # A writer that dies without closing leaves "bob" in the WAL only.
    subprocess.run(
        [sys.executable, "-c", WRITE_TO_WAL_AND_DIE, str(data / "tidings.db")],
        timeout=WAIT_S,
        check=True,
    )
    assert (data / "tidings.db-wal").stat().st_size > 0
    return data, backup


def _refused(data: Path, *args: str) -> str:
    before = _snapshot(data)
    result = tidings("restore", *args, "--data-dir", str(data))
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("tidings: error: ")
    assert _snapshot(data) == before
    return lines[0]


def test_a_missing_backup_is_refused_and_changes_nothing(
    store_with_backup: tuple[Path, Path], tmp_path: Path
) -> None:
    data, _ = store_with_backup
    line = _refused(data, "--from", str(tmp_path / "mondya.db"))
    assert "mondya.db does not exist" in line
    assert "nothing was changed" in line


def test_a_garbage_file_is_refused_and_changes_nothing(
    store_with_backup: tuple[Path, Path], tmp_path: Path
) -> None:
    data, _ = store_with_backup
    garbage = tmp_path / "notes.txt"
    garbage.write_bytes(os.urandom(4096))
    assert "is not a SQLite database" in _refused(data, "--from", str(garbage))


def test_a_database_of_another_schema_is_refused_and_changes_nothing(
    store_with_backup: tuple[Path, Path], tmp_path: Path
) -> None:
    data, backup = store_with_backup
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY)")
    conn.close()
    assert "not a Tidings store" in _refused(data, "--from", str(other))

    newer = tmp_path / "newer.db"
    newer.write_bytes(backup.read_bytes())
    with sqlite3.connect(newer) as conn:
        conn.execute("INSERT INTO schema_version VALUES (999, 'sqlite_999_future.sql', 0)")
    conn.close()
    assert "schema version 999" in _refused(data, "--from", str(newer))


def test_a_corrupt_backup_is_refused_and_changes_nothing(
    store_with_backup: tuple[Path, Path], tmp_path: Path
) -> None:
    data, backup = store_with_backup
    corrupt = tmp_path / "corrupt.db"
    raw = bytearray(backup.read_bytes())
    page = 4096
    raw[2 * page + 100 : 3 * page] = os.urandom(page - 100)  # a b-tree page, header kept
    corrupt.write_bytes(bytes(raw))
    line = _refused(data, "--from", str(corrupt))
    assert "corrupt.db" in line


async def test_a_restore_while_the_server_runs_is_refused(
    store_with_backup: tuple[Path, Path],
) -> None:
    data, backup = store_with_backup
    proc = await spawn_server(data, free_port())
    try:
        line = await asyncio.to_thread(_refused, data, "--from", str(backup))
        assert "in use by a running `tidings serve`" in line
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), WAIT_S)


def test_restore_keeps_the_replaced_store_and_swaps_in_the_backup(
    store_with_backup: tuple[Path, Path],
) -> None:
    data, backup = store_with_backup
    assert _usernames(data) == ["alice", "bob"]
    done = tidings("restore", "--from", str(backup), "--data-dir", str(data))
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert _usernames(data) == ["alice"]
    replaced = Path(out["replaced_copy"])
    assert replaced.parent == data
    # The dated copy is the whole old store, WAL included, in one file.
    with sqlite3.connect(f"{replaced.as_uri()}?mode=ro", uri=True) as conn:
        names = [r[0] for r in conn.execute("SELECT username FROM users ORDER BY username")]
    conn.close()
    assert names == ["alice", "bob"]
    assert out["epoch"] != out["previous_epoch"]
    assert out["from_ts"] <= out["to_ts"]


@pytest.mark.parametrize("step", STEPS)
def test_a_restore_killed_after_any_step_leaves_a_working_store(
    store_with_backup: tuple[Path, Path], step: str
) -> None:
    data, backup = store_with_backup
    died = subprocess.run(
        [
            sys.executable,
            "-c",
            DIE_AFTER_STEP,
            step,
            "restore",
            "--from",
            str(backup),
            "--data-dir",
            str(data),
        ],
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        env=_env(),
        check=False,
    )
    assert died.returncode == 9, died.stderr
    names = _usernames(data)
    assert names in (["alice", "bob"], ["alice"])  # the old store or the backup
    assert names == (["alice"] if step == "swap" else ["alice", "bob"])
    added = tidings("user", "add", "carol", "--password", "carol-secret", "--data-dir", str(data))
    assert added.returncode == 0, added.stderr
    again = tidings("restore", "--from", str(backup), "--data-dir", str(data))
    assert again.returncode == 0, again.stderr
    assert _usernames(data) == ["alice"]


async def test_restore_on_postgresql_is_refused_while_a_node_has_the_store_open(
    postgres_url: str,
) -> None:
    from tidings.store.postgres import PostgresStore

    node = PostgresStore.from_url(postgres_url)
    await node.start()
    try:
        before = node.epoch
        refused = await asyncio.to_thread(_restore_postgres, postgres_url)
        assert refused.returncode == 1
        [line] = refused.stderr.splitlines()
        assert "in use by running nodes" in line
    finally:
        await node.close()
    done = await asyncio.to_thread(_restore_postgres, postgres_url)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["previous_epoch"] == before


def _restore_postgres(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tidings", "restore"],
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        env={**_env(), "TIDINGS_STORE": url},
        check=False,
    )
