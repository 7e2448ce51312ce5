"""A feature plugs in by registration, end to end, on SQLite and PostgreSQL:
its kind is accepted and stored, its route answers and is documented, its
setting is read from the environment, /readyz shows its check, its table
exists after migration, and its worker is registered for the change log."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg  # type: ignore[import-untyped]
import pytest

from tests.conftest import RunningServer, ServerFactory, make_settings
from tests.feature_probe.feature import PROBE_MAX_BYTES, ProbeState, probe_feature
from tests.wire import Http, Raw
from tidings.app import build_node


async def _tables(server: RunningServer) -> tuple[bool, list[Any]]:
    """Whether probe_notes exists, and the probe's rows of component_schema (the
    table that a node with no feature migrations does not create)."""
    url = server.node.settings.store_url
    query = "SELECT component, version, name FROM component_schema WHERE component = 'probe'"
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url[len("sqlite://") :]) as conn:
            exists = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'probe_notes'"
            ).fetchone()
            if exists is None:
                return False, []
            return True, [tuple(row) for row in conn.execute(query)]
    conn = await asyncpg.connect(url)
    try:
        if not await conn.fetchval("SELECT to_regclass('probe_notes') IS NOT NULL"):
            return False, []
        return True, [tuple(row) for row in await conn.fetch(query)]
    finally:
        await conn.close()


async def test_a_feature_plugs_in_end_to_end(
    server_factory: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIDINGS_PROBE_GREETING", "ahoy")
    state = ProbeState()
    server = await server_factory(features=[probe_feature(state)])
    async with aiohttp.ClientSession() as session:
        http = Http(session, server.http_url)
        alice = await http.account()
        bob = await http.account()
        cid = await http.conversation(alice, "direct", [bob])
        path = f"/v1/conversations/{cid}/messages"

        note = {"kind": "probe", "note": "hi"}
        status, body = await http.call(
            "POST", path, alice.token, {"client_msg_id": "p1", "content": note}
        )
        assert status == 201, body
        ws, _ = await Raw.connect(session, server.ws_url, bob.token)
        await ws.send(
            {"type": "send", "conversation_id": cid, "client_msg_id": "p2", "content": note}
        )
        assert (await ws.recv_type("ack"))["seq"] == 2
        await ws.close()
        status, body = await http.call("GET", path, alice.token)
        assert [m["content"] for m in body["messages"]] == [note, note]

        refused = {
            "bad_frame: probe notes are not shouted": {"kind": "probe", "note": "HI"},
            "too_large": {"kind": "probe", "note": "x", "pad": "y" * PROBE_MAX_BYTES},
            "bad_frame: invalid content": {"kind": "probe"},
        }
        for expected, content in refused.items():
            status, body = await http.call(
                "POST", path, alice.token, {"client_msg_id": "bad", "content": content}
            )
            error = body["error"]
            assert f"{error['code']}: {error['message']}".startswith(expected), body

        status, body = await http.call("GET", "/v1/probe")
        assert (status, body) == (200, {"greeting": "ahoy", "started": True})
        status, body = await http.call("GET", "/openapi.json")
        assert {"/v1/probe", "/readyz"} <= body["paths"].keys()
        status, body = await http.call("GET", "/readyz")
        assert (status, body["checks"]["probe"]) == (200, "ok"), body
    assert state.probes == 1
    assert [w.name for w in server.node.features.workers] == ["search", "push", "probe-notes"]
    exists, versions = await _tables(server)
    assert exists
    assert versions == [("probe", 1, "sqlite_001_probe_notes.sql")] or versions == [
        ("probe", 1, "postgres_001_probe_notes.sql")
    ]


async def test_without_the_feature_its_kind_is_refused(tidings_server: RunningServer) -> None:
    async with aiohttp.ClientSession() as session:
        http = Http(session, tidings_server.http_url)
        alice = await http.account()
        bob = await http.account()
        cid = await http.conversation(alice, "direct", [bob])
        status, body = await http.call(
            "POST",
            f"/v1/conversations/{cid}/messages",
            alice.token,
            {"client_msg_id": "p1", "content": {"kind": "probe", "note": "hi"}},
        )
    assert status == 400
    assert body["error"]["message"] == "content kind 'probe' cannot be sent by clients"
    assert await _tables(tidings_server) == (False, [])


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_feature_starts_and_stops_with_the_node_and_migrates_once(
    tmp_path: Path, backend: str
) -> None:
    settings = make_settings(tmp_path)
    for _ in range(2):  # the second node finds the probe's migration applied
        state = ProbeState()
        node = build_node(settings, features=[probe_feature(state)])
        await node.start()
        assert state.lifecycle == ["started"]
        await node.stop()
        assert state.lifecycle == ["started", "stopped"]
    with sqlite3.connect(settings.store_url[len("sqlite://") :]) as conn:
        rows = conn.execute(
            "SELECT component, version FROM component_schema WHERE component = 'probe'"
        ).fetchall()
    assert rows == [("probe", 1)]
