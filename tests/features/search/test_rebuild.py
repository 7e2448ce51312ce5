"""The index is checked at start and while the server runs: damaged, lost or
behind the change log, it is rebuilt from the store in the background while
search answers from the store (``degraded``); ``tidings search reindex``
swaps in a new one while the server answers. Results then match the store.

Damage means, on SQLite, the index files overwritten with garbage or an
older copy of them put back; on PostgreSQL (whose pages are its own
business) the live generation's rows deleted or its position moved back.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path

import aiohttp
import asyncpg  # type: ignore[import-untyped]
import pytest

from tests.conftest import RunningServer, ServerFactory, start_server
from tests.e2e.messaging_wire import sent
from tests.features.search.wire import WAIT_S, hits, search, until
from tests.procs import node_env
from tests.wire import Account, Http, Raw


def index_dir(server: RunningServer) -> Path:
    return Path(server.node.settings.data_dir) / "search"


def garble(directory: Path) -> None:
    """Overwrite every file of the index with bytes that are no SQLite file."""
    for path in directory.glob("gen-*"):
        size = max(path.stat().st_size, 4096)
        path.write_bytes(b"not an index! " * (size // 14))


async def pg(server: RunningServer, statement: str) -> None:
    conn = await asyncpg.connect(server.node.settings.store_url)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def chat(
    server: RunningServer, http: Http, session: aiohttp.ClientSession
) -> tuple[Account, Account, str, set[tuple[str, int]]]:
    """Alice and Bob, three findable texts, an edited one and a deleted one;
    what a search for "harbour" must find once the index has them."""
    alice, bob = await http.account(), await http.account()
    cid = await http.conversation(alice, "group", [bob])
    ws, _ = await Raw.connect(session, server.ws_url, alice.token)
    found = {(cid, await sent(ws, cid, {"text": f"harbour visit {i}"})) for i in range(3)}
    edited = await sent(ws, cid, {"text": "airport visit"})
    await sent(ws, cid, {"kind": "edit", "target": edited, "text": "harbour after all"})
    gone = await sent(ws, cid, {"text": "harbour cancelled"})
    await sent(ws, cid, {"kind": "delete", "target": gone})
    await ws.close()
    found.add((cid, edited))
    await until(http, bob, "harbour", lambda b: set(hits(b)) == found)
    return alice, bob, cid, found


async def settle(http: Http, who: Account, expected: set[tuple[str, int]]) -> None:
    """Every answer finds only what it may; soon the index answers, completely."""

    def done(body: dict[str, object]) -> bool:
        assert set(hits(body)) <= expected | {(c, s) for c, s in hits(body) if body["degraded"]}
        return not body["degraded"] and set(hits(body)) == expected

    await until(http, who, "harbour", done, timeout=WAIT_S)


@pytest.mark.parametrize("damage", ["garbled", "behind"])
async def test_a_damaged_or_old_index_is_rebuilt_at_start(
    server_factory: ServerFactory, backend: str, damage: str
) -> None:
    first = await server_factory()
    async with aiohttp.ClientSession() as session:
        http = Http(session, first.http_url)
        copy = Path(first.node.settings.data_dir).parent / "old-index"
        if backend == "sqlite" and damage == "behind":
            await chat(first, http, session)
            shutil.copytree(index_dir(first), copy)  # an older copy, put back below
        _, bob, _, expected = await chat(first, http, session)
        await first.stop()
        if backend == "sqlite":
            if damage == "garbled":
                garble(index_dir(first))
            else:
                shutil.rmtree(index_dir(first))
                shutil.copytree(copy, index_dir(first))
        elif damage == "garbled":
            await pg(first, "DELETE FROM search_generations")
        else:
            await pg(first, "DELETE FROM search_entries")
            await pg(first, "UPDATE search_generations SET position = 0")
        second = await start_server(first.node.settings)
        try:
            http = Http(session, second.http_url)
            await settle(http, bob, expected)
            assert (
                second.node.metrics.registry.get_sample_value("tidings_search_rebuilds_total") == 1
            )
        finally:
            await second.stop()


async def test_damage_while_running_is_found_and_rebuilt(
    server_factory: ServerFactory, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIDINGS_SEARCH_SWEEP_S", "0.1")
    server = await server_factory()
    async with aiohttp.ClientSession() as session:
        http = Http(session, server.http_url)
        _, bob, _, expected = await chat(server, http, session)
        if backend == "sqlite":
            garble(index_dir(server))
        else:
            await pg(server, "DELETE FROM search_generations")
        await until(http, bob, "harbour", lambda b: _rebuilds(server) > 0)
        await settle(http, bob, expected)


async def test_reindex_swaps_while_the_server_answers(tidings_server: RunningServer) -> None:
    server = tidings_server
    async with aiohttp.ClientSession() as session:
        http = Http(session, server.http_url)
        alice, bob, cid, expected = await chat(server, http, session)
        store = ["--store", server.node.settings.store_url]
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tidings",
            "search",
            "reindex",
            *store,
            env=node_env(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        answers = 0
        while proc.returncode is None:
            body = await search(http, bob, "harbour")
            assert set(hits(body)) == expected
            answers += 1
            try:
                await asyncio.wait_for(proc.wait(), 0.05)
            except TimeoutError:
                continue
        out, err = await asyncio.wait_for(proc.communicate(), WAIT_S)
        assert proc.returncode == 0, err
        assert b'"search_index":"rebuilt"' in out
        assert b"100.0%" in err
        assert answers >= 1
        # The server follows the new generation: new messages are found too.
        ws, _ = await Raw.connect(session, server.ws_url, alice.token)
        later = await sent(ws, cid, {"text": "harbour again"})
        await ws.close()
        await settle(http, bob, expected | {(cid, later)})


def _rebuilds(server: RunningServer) -> float:
    value = server.node.metrics.registry.get_sample_value("tidings_search_rebuilds_total")
    return value or 0.0
