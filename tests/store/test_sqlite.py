"""SQLite-specific behaviour that the conformance suite cannot see: pragmas,
the file on disk, migrations, group commit and failure mapping."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import pytest

from tests.sqlite_lock import write_lock_held
from tidings.core.errors import ErrorCode, TidingsError
from tidings.core.models import AppendResult, ConversationKind, NewMessage
from tidings.core.ports.store.composite import Store
from tidings.store.sqlite import SqliteStore
from tidings.store.sqlite_writer import SqliteWriter

WAIT_S = 60.0
"""Upper bound for any wait: only turns a hang into a failure."""

NOW = 1_700_000_000_000


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(str(tmp_path / "db" / "tidings.db"))
    await store.start()
    try:
        yield store
    finally:
        await store.close()


async def _conversation(store: SqliteStore) -> tuple[str, str, str]:
    """A group of one user with one device: (conversation_id, user_id, device_id)."""
    user = await store.create_user("alice", "h", NOW)
    device = await store.create_device(user.user_id, "phone", "token", NOW)
    conv, _ = await store.create_conversation(
        ConversationKind.GROUP, user.user_id, [], "notes", NOW
    )
    return conv.conversation_id, user.user_id, device.device_id


def _text(cid: str, uid: str, did: str, client_msg_id: str) -> NewMessage:
    return NewMessage(cid, uid, did, client_msg_id, json.dumps({"text": "x"}).encode(), NOW)


def test_satisfies_the_store_protocol(tmp_path: Path) -> None:
    store: Store = SqliteStore(str(tmp_path / "t.db"))  # checked by mypy
    assert isinstance(store, SqliteStore)


async def test_creates_parent_dir_and_enables_wal(sqlite_store: SqliteStore) -> None:
    assert await asyncio.to_thread(Path(sqlite_store.path).is_file)
    pragmas = await sqlite_store.write_pragmas()
    assert pragmas["journal_mode"] == "wal"
    assert pragmas["foreign_keys"] == 1
    assert pragmas["synchronous"] == 2  # FULL
    assert int(pragmas["busy_timeout"]) > 0
    with sqlite3.connect(sqlite_store.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


@pytest.mark.parametrize(("mode", "value"), [("normal", 1), ("FULL", 2), ("extra", 3)])
async def test_synchronous_setting_is_applied(tmp_path: Path, mode: str, value: int) -> None:
    store = SqliteStore(str(tmp_path / "t.db"), synchronous=mode)
    await store.start()
    try:
        assert (await store.write_pragmas())["synchronous"] == value
    finally:
        await store.close()


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="synchronous"):
        SqliteStore("/tmp/x.db", synchronous="sometimes")
    with pytest.raises(ValueError, match="file path"):
        SqliteStore(":memory:")
    with pytest.raises(ValueError, match="sqlite URL"):
        SqliteStore.from_url("postgres://host/db")
    with pytest.raises(ValueError, match="absolute"):
        SqliteStore.from_url("sqlite://relative.db")


async def test_from_url(tmp_path: Path) -> None:
    path = tmp_path / "with space" / "t.db"
    store = SqliteStore.from_url(f"sqlite://{path.as_posix().replace(' ', '%20')}", "normal")
    assert store.path == str(path)
    await store.start()
    try:
        assert (await store.write_pragmas())["synchronous"] == 1
    finally:
        await store.close()


async def test_data_and_migrations_survive_reopen(tmp_path: Path) -> None:
    path = str(tmp_path / "t.db")
    first = SqliteStore(path)
    await first.start()
    await first.start()  # idempotent
    cid, uid, did = await _conversation(first)
    await first.append(_text(cid, uid, did, "m1"))
    epoch = first.epoch
    await first.close()

    second = SqliteStore(path)
    await second.start()
    try:
        assert second.epoch == epoch
        history = await second.history(cid)
        assert [(m.seq, m.client_msg_id) for m in history] == [(1, "m1")]
        assert (await second.append(_text(cid, uid, did, "m2"))).message.seq == 2
    finally:
        await second.close()
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT version, name FROM schema_version").fetchall()
    conn.close()
    assert rows == [
        (1, "sqlite_001_initial.sql"),
        (2, "sqlite_002_accounts.sql"),
        (3, "sqlite_003_restores.sql"),
        (4, "sqlite_004_changes.sql"),
        (5, "sqlite_005_messaging.sql"),
        (6, "sqlite_006_announcements.sql"),
    ]


async def test_concurrent_writes_share_commits(sqlite_store: SqliteStore) -> None:
    cid, uid, did = await _conversation(sqlite_store)
    commits_before = sqlite_store.commit_count
    writes_before = sqlite_store.write_count
    count = 500
    async with asyncio.timeout(WAIT_S):
        results = await asyncio.gather(
            *(sqlite_store.append(_text(cid, uid, did, f"m{i}")) for i in range(count))
        )
    assert sorted(r.message.seq for r in results) == list(range(1, count + 1))
    commits = sqlite_store.commit_count - commits_before
    assert sqlite_store.write_count - writes_before == count
    # All 500 were queued before the writer could finish its first commit's
    # worth of work, so they cannot each have had a transaction of their own.
    assert 1 <= commits < count


async def test_locked_database_is_unavailable_and_fails_the_whole_batch(tmp_path: Path) -> None:
    path = str(tmp_path / "t.db")
    store = SqliteStore(path, busy_timeout_ms=50)
    await store.start()
    try:
        cid, uid, did = await _conversation(store)
        with write_lock_held(path):
            async with asyncio.timeout(WAIT_S):
                outcomes = await asyncio.gather(
                    *(store.append(_text(cid, uid, did, f"m{i}")) for i in range(20)),
                    return_exceptions=True,
                )
        for outcome in outcomes:
            assert isinstance(outcome, TidingsError)
            assert outcome.code is ErrorCode.UNAVAILABLE
            assert outcome.retryable
        # Nothing was stored, and a retry with the same ids now succeeds.
        assert await store.history(cid) == []
        retry = await store.append(_text(cid, uid, did, "m0"))
        assert (retry.message.seq, retry.duplicate) == (1, False)
    finally:
        await store.close()


async def test_a_lock_held_elsewhere_is_waited_for_off_the_loop(tmp_path: Path) -> None:
    """The writer tries BEGIN on the loop without waiting; when another
    process holds the lock it waits on its thread (up to the busy timeout),
    and the loop keeps running meanwhile."""
    path = str(tmp_path / "t.db")
    store = SqliteStore(path, busy_timeout_ms=30_000)
    await store.start()
    try:
        cid, uid, did = await _conversation(store)
        with write_lock_held(path) as other:
            append = asyncio.create_task(store.append(_text(cid, uid, did, "m0")))
            async with asyncio.timeout(WAIT_S):
                for _ in range(20):  # the loop is free while the writer waits
                    await asyncio.sleep(0.01)
                assert not append.done()
                other.execute("COMMIT")
                stored = await append
        assert (stored.message.seq, stored.duplicate) == (1, False)
        pragmas = await store.write_pragmas()
        assert pragmas["busy_timeout"] == 30_000  # restored after the attempt on the loop
    finally:
        await store.close()


async def test_unopenable_path_is_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    store = SqliteStore(str(blocker / "t.db"))
    with pytest.raises(TidingsError) as info:
        await store.start()
    assert info.value.code is ErrorCode.UNAVAILABLE
    await store.close()


async def test_closed_store_is_unavailable(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "t.db"))
    await store.start()
    cid, uid, did = await _conversation(store)
    pending = [
        asyncio.ensure_future(store.append(_text(cid, uid, did, f"m{i}"))) for i in range(50)
    ]
    await asyncio.sleep(0)  # let them enqueue
    await store.close()  # drains what was queued
    async with asyncio.timeout(WAIT_S):
        done = await asyncio.gather(*pending)
    assert all(isinstance(r, AppendResult) for r in done)
    with pytest.raises(TidingsError) as info:
        await store.append(_text(cid, uid, did, "late"))
    assert info.value.code is ErrorCode.UNAVAILABLE
    with pytest.raises(TidingsError) as info:
        await store.ping()
    assert info.value.code is ErrorCode.UNAVAILABLE
    await store.close()  # idempotent


async def test_writer_undoes_only_a_job_that_failed_half_way(tmp_path: Path) -> None:
    """A job that raises after writing is undone alone (the savepoint replay)."""
    path = str(tmp_path / "w.db")

    def connect() -> sqlite3.Connection:
        return sqlite3.connect(path, isolation_level=None, check_same_thread=False)

    def init(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE t (k TEXT PRIMARY KEY)")

    def insert(key: str) -> Callable[[sqlite3.Connection], str]:
        def op(conn: sqlite3.Connection) -> str:
            conn.execute("INSERT INTO t (k) VALUES (?)", (key,))
            return key

        return op

    def write_then_fail(conn: sqlite3.Connection) -> str:
        conn.execute("INSERT INTO t (k) VALUES ('half')")
        raise TidingsError(ErrorCode.CONFLICT, "changed my mind")

    def fail_first(conn: sqlite3.Connection) -> str:
        raise TidingsError(ErrorCode.NOT_FOUND, "nothing written")

    writer = SqliteWriter(connect)
    await writer.start(init)
    try:
        ops: list[Callable[[sqlite3.Connection], str]] = [insert(f"k{i}") for i in range(100)]
        ops[30] = write_then_fail
        ops[60] = fail_first
        ops[70] = insert("k1")  # a duplicate key: IntegrityError, nothing written
        async with asyncio.timeout(WAIT_S):
            outcomes = await asyncio.gather(
                *(writer.submit(f"op{i}", op) for i, op in enumerate(ops)),
                return_exceptions=True,
            )
        assert isinstance(outcomes[30], TidingsError)
        assert outcomes[30].code is ErrorCode.CONFLICT
        assert isinstance(outcomes[60], TidingsError)
        assert outcomes[60].code is ErrorCode.NOT_FOUND
        assert isinstance(outcomes[70], sqlite3.IntegrityError)
        expected = {f"k{i}" for i in range(100)} - {"k30", "k60", "k70"}
        assert {o for o in outcomes if isinstance(o, str)} == expected
    finally:
        await writer.close()
    conn = sqlite3.connect(path)
    try:
        stored = {k for (k,) in conn.execute("SELECT k FROM t")}
    finally:
        conn.close()
    assert stored == expected


async def test_grouped_jobs_run_together_and_a_raising_group_is_replayed_alone(
    tmp_path: Path,
) -> None:
    """Neighbouring grouped jobs reach their runner in one call; if that call
    raises after writing, each job is replayed alone and only the bad one fails."""
    path = str(tmp_path / "g.db")
    calls: list[int] = []

    def connect() -> sqlite3.Connection:
        return sqlite3.connect(path, isolation_level=None, check_same_thread=False)

    def init(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE t (k TEXT PRIMARY KEY)")

    def insert_all(conn: sqlite3.Connection, keys: Sequence[str]) -> list[str | TidingsError]:
        calls.append(len(keys))
        conn.executemany("INSERT INTO t (k) VALUES (?)", [(k,) for k in keys])
        return list(keys)

    keys = [f"k{i}" for i in range(20)]
    keys[15] = "k3"  # raises IntegrityError half-way through the group's insert
    writer = SqliteWriter(connect)
    await writer.start(init)
    try:
        async with asyncio.timeout(WAIT_S):
            outcomes = await asyncio.gather(
                *(writer.submit_grouped("insert", insert_all, k) for k in keys),
                return_exceptions=True,
            )
    finally:
        await writer.close()
    assert max(calls) > 1  # the first attempt ran them as a group
    assert isinstance(outcomes[15], sqlite3.IntegrityError)
    expected = set(keys)  # k3 once: the first one went in
    assert {o for o in outcomes if isinstance(o, str)} == expected
    assert outcomes[3] == "k3"
    conn = sqlite3.connect(path)
    try:
        assert {k for (k,) in conn.execute("SELECT k FROM t")} == expected
    finally:
        conn.close()


async def test_a_batch_that_fails_outside_sqlite_fails_its_jobs_retryably(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever ends a batch, no caller is left waiting: here COMMIT cannot
    even be handed to the writer's thread (as after a close that timed out)."""
    store = SqliteStore(str(tmp_path / "t.db"))
    await store.start()
    try:
        cid, uid, did = await _conversation(store)
        writer = store._writer
        real_off_loop = writer._off_loop

        async def no_commit(fn: Callable[..., object], *args: object) -> object:
            if args == ("COMMIT",):
                raise RuntimeError("cannot schedule new futures after shutdown")
            return await real_off_loop(fn, *args)

        monkeypatch.setattr(writer, "_off_loop", no_commit)
        async with asyncio.timeout(WAIT_S):
            with pytest.raises(TidingsError) as raised:
                await store.append(_text(cid, uid, did, "lost-commit"))
        assert raised.value.code is ErrorCode.UNAVAILABLE
        monkeypatch.undo()
        async with asyncio.timeout(WAIT_S):
            result = await store.append(_text(cid, uid, did, "lost-commit"))
        assert (result.duplicate, result.message.seq) == (False, 1)  # nothing was stored
    finally:
        await store.close()


async def test_backup_copy_is_stamped_and_restore_consumes_the_stamp(tmp_path: Path) -> None:
    live = SqliteStore(str(tmp_path / "live.db"))
    await live.start()
    copy_path = str(tmp_path / "copy.db")
    try:
        await _conversation(live)
        taken_at = await live.backup_to(copy_path)
        assert await live.backup_time() == NOW  # the live store carries no stamp
        with sqlite3.connect(live.path) as conn:
            assert conn.execute("SELECT count(*) FROM backup_stamp").fetchone() == (0,)
        conn.close()
    finally:
        await live.close()
    copy = SqliteStore(copy_path)
    await copy.start()
    try:
        assert await copy.backup_time() == taken_at
        restore = await copy.record_restore(taken_at, taken_at + 1)
        assert restore.from_ts == taken_at
        assert await copy.backup_time() == NOW  # the stamp is used up
    finally:
        await copy.close()
