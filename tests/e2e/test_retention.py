"""The retention purge end to end (issue: messaging): entries older than the
policy go, as a prefix of the seq stream; a device that comes back after the
purge is told where history now starts.

No test waits a day: the first drives the store's purge with a ``now`` that
puts the cutoff exactly between two messages; the second runs the node's own
sweep with its clock a few days ahead.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import ServerFactory
from tests.e2e.messaging_wire import (
    clock_past,
    entry,
    history,
    listing,
    send,
    sent,
    sync,
    view,
)
from tests.e2e.test_messaging_delete import files_holding
from tests.wire import WAIT_S, Http, Raw, poll
from tidings.core.ids import now_ms
from tidings.features.messaging import retention

DAY_MS = 86_400_000


async def test_purge_removes_the_expired_prefix_and_a_returning_device_learns_history_start(
    server_factory: ServerFactory, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIDINGS_SEARCH_SWEEP_S", "0.1")
    tidings_server = await server_factory()
    purged_marker = f"PURGED{uuid.uuid4().hex}"
    kept_marker = f"KEPT{uuid.uuid4().hex}"
    data_dir = Path(tidings_server.node.settings.data_dir)
    async with aiohttp.ClientSession() as session:
        http = Http(session, tidings_server.http_url)
        a_acc, b_acc = await http.account(), await http.account()
        cid = await http.conversation(a_acc, "direct", [b_acc])
        # B's device syncs once, then goes away.
        b, _ = await Raw.connect(session, tidings_server.ws_url, b_acc.token)
        _, done = await sync(b)
        token = done["token"]
        await b.close()

        a, _ = await Raw.connect(session, tidings_server.ws_url, a_acc.token)
        await sent(a, cid, {"text": f"old {purged_marker}"})
        await sent(a, cid, {"text": "old two"})
        old = await send(a, cid, {"text": "old three"})
        assert (old["type"], old["seq"]) == ("ack", 3)
        await clock_past(old["ts"])  # a few ms: the next messages' ts is later
        await sent(a, cid, {"text": f"new {kept_marker}"})
        await sent(a, cid, {"kind": "reaction", "target": 4, "emoji": "👍", "on": True})
        status, _ = await http.call(
            "POST", f"/v1/conversations/{cid}/hidden", b_acc.token, {"seqs": [2, 4]}
        )
        assert status == 200
        # Either member of a direct conversation sets its retention.
        status, body = await http.call(
            "PATCH", f"/v1/conversations/{cid}", b_acc.token, {"retention_days": 1}
        )
        assert (status, body["retention_days"]) == (200, 1)

        # "Now" is one day after the third message: 1..3 have expired, 4.. not.
        store = tidings_server.node.store
        result = await store.purge_expired(old["ts"] + 1 + DAY_MS, 0, 1000)
        assert (result.purged, result.entries) == ({cid: 3}, 3)
        again = await store.purge_expired(old["ts"] + 1 + DAY_MS, 0, 1000)
        assert (again.purged, again.entries) == ({}, 0)

        # The device that comes back syncs with its old token.
        b, _ = await Raw.connect(session, tidings_server.ws_url, b_acc.token)
        msgs, done = await sync(b, since=token)
        assert [m["seq"] for m in msgs] == [4, 5]
        state = entry(done, cid)
        assert (state["history_start"], state["last_seq"], state["unread"]) == (4, 5, 1)
        item = await listing(http, b_acc, cid)
        assert (item["history_start"], item["unread"]) == (4, 1)
        assert (await listing(http, a_acc, cid))["history_start"] == 4
        assert [m["seq"] for m in await history(http, a_acc, cid)] == [4, 5]
        assert [m["seq"] for m in await history(http, b_acc, cid, "&before_seq=4")] == []
        (shown,) = await view(http, a_acc, cid)
        assert (shown["seq"], shown["reactions"][0]["count"]) == (4, 1)
        # The hidden marks of purged entries went with them.
        status, body = await http.call("GET", f"/v1/conversations/{cid}/hidden", b_acc.token)
        assert body["seqs"] == [4]
        # Sends go on after the purged prefix.
        assert await sent(a, cid, {"text": "after the purge"}) == 6
        # The purged text is gone from the embedded store's files as a
        # delete's is (PostgreSQL's files are the database server's).
        # The search index drops its copy at its next sweep (every 0.1 s here).
        if backend == "sqlite":
            await poll(lambda: files_holding(data_dir, purged_marker) == [], WAIT_S)
            assert files_holding(data_dir, kept_marker)
        await a.close()
        await b.close()


async def test_the_nodes_own_sweep_applies_the_server_policy_unless_a_group_keeps_for_ever(
    server_factory: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Settings.retention_days 1 and the node's sweep every second, its clock
    three days ahead: the default conversation is purged whole, the group
    whose retention_days is 0 keeps everything."""
    ahead = 3 * DAY_MS
    monkeypatch.setattr(retention, "now_ms", lambda: now_ms() + ahead)
    server = await server_factory(retention_days=1, retention_sweep_s=1)
    async with aiohttp.ClientSession() as session:
        http = Http(session, server.http_url)
        a_acc, b_acc = await http.account(), await http.account()
        direct = await http.conversation(a_acc, "direct", [b_acc])
        group = await http.conversation(a_acc, "group", [b_acc])
        status, body = await http.call(
            "PATCH", f"/v1/conversations/{group}", a_acc.token, {"retention_days": 0}
        )
        assert (status, body["retention_days"]) == (200, 0)
        a, _ = await Raw.connect(session, server.ws_url, a_acc.token)
        for n in range(3):
            await sent(a, direct, {"text": f"direct {n}"})
            await sent(a, group, {"text": f"group {n}"})

        # The sweep runs every second: wait (bounded) for it to reach the direct one.
        for _ in range(int(WAIT_S / 0.05)):
            if (await listing(http, b_acc, direct))["history_start"] == 4:
                break
            await asyncio.sleep(0.05)
        assert (await listing(http, b_acc, direct))["history_start"] == 4
        assert await history(http, b_acc, direct) == []
        item = await listing(http, b_acc, direct)
        assert (item["last_seq"], item["unread"]) == (3, 0)
        assert [m["seq"] for m in await history(http, b_acc, group)] == [1, 2, 3]
        assert (await listing(http, b_acc, group))["history_start"] == 1
        b, _ = await Raw.connect(session, server.ws_url, b_acc.token)
        msgs, done = await sync(b)
        assert [(m["conversation_id"], m["seq"]) for m in msgs] == [(group, n) for n in (1, 2, 3)]
        assert entry(done, direct)["history_start"] == 4
        assert "history_start" not in entry(done, group)
        await a.close()
        await b.close()
